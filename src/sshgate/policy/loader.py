"""Build the decision point ``policies:`` asks for, and swap it on reload only when the new one works."""

from __future__ import annotations

import asyncio
from typing import Any

from sshgate.config import Policies
from sshgate.policy.decision import AllowAll, Decision, DecisionPoint, Stage
from sshgate.policy.embedded import EmbeddedDecisionPoint
from sshgate.policy.opa import OpaDecisionPoint
from sshgate.policy.sources import load_modules


async def build_decision_point(config: Policies) -> DecisionPoint:
    """Compile now, so errors show at load; raises PolicyLoadError."""
    if config.engine == "opa":
        return OpaDecisionPoint(config.opa_url, config.default_action, config.timeout_ms)
    if not config.paths:
        return AllowAll()
    modules = load_modules(config.paths)
    return await EmbeddedDecisionPoint.start(modules, config.default_action, config.timeout_ms)


class ReloadableDecisionPoint:
    """The decision point the gateway keeps for its lifetime; reloads replace what is behind it.

    A reload builds the whole new engine (every worker compiled) before one assignment swaps it
    in: each decision is made wholly by the old set or wholly by the new one. Reloads (the file
    watcher's and SIGHUP's) run one at a time, so the last one started is the last one applied.
    """

    def __init__(self, config: Policies, current: DecisionPoint) -> None:
        self.config = config
        self.current = current
        self._reloading = asyncio.Lock()
        self.closed = False

    @classmethod
    async def open(cls, config: Policies) -> ReloadableDecisionPoint:
        return cls(config, await build_decision_point(config))

    def has_rule(self, stage: Stage) -> bool:
        return self.current.has_rule(stage)

    async def decide(self, stage: Stage, input_doc: dict[str, Any]) -> Decision:
        return await self.current.decide(stage, input_doc)

    async def reload(self, config: Policies | None = None) -> None:
        """Recompile from ``config`` (default: the current one); on PolicyLoadError the old set stays.

        The default is read under the lock: a watcher reload queued behind a SIGHUP one builds with
        the settings that one brought, instead of finishing last with the older ones.
        """
        async with self._reloading:
            if self.closed:  # a watcher's reload after the gateway stopped: nothing to swap in
                return
            config = config or self.config
            new = await build_decision_point(config)
            (old, old_config), self.current, self.config = (self.current, self.config), new, config
        # Decisions the old set has in flight end by their deadline at the latest.
        await old.aclose(old_config.timeout_ms / 1000)

    async def aclose(self, grace_s: float = 0.0) -> None:
        """Close for good; a reload still building finishes first, and none runs after."""
        async with self._reloading:
            self.closed = True
            await self.current.aclose(grace_s)
