"""Build the decision point ``policies:`` asks for, and swap it on reload only when the new one works."""

from __future__ import annotations

import asyncio
from typing import Any

from sshgate.config import Policies
from sshgate.policy.decision import AllowAll, Decision, DecisionPoint, Stage
from sshgate.policy.embedded import EmbeddedDecisionPoint
from sshgate.policy.opa import OpaDecisionPoint
from sshgate.policy.rego import RegorusEngine
from sshgate.policy.sources import load_modules


def build_decision_point(config: Policies) -> DecisionPoint:
    """Compile now (on the calling thread, which must be the one that decides); raises PolicyLoadError."""
    if config.engine == "opa":
        return OpaDecisionPoint(config.opa_url, config.default_action, config.timeout_ms)
    if not config.paths:
        return AllowAll()
    engine = RegorusEngine.compile(load_modules(config.paths))
    return EmbeddedDecisionPoint(engine, config.default_action)


class ReloadableDecisionPoint:
    """The decision point the gateway keeps for its lifetime; reloads replace what is behind it."""

    def __init__(self, config: Policies) -> None:
        self.config = config
        self.current = build_decision_point(config)

    def has_rule(self, stage: Stage) -> bool:
        return self.current.has_rule(stage)

    async def decide(self, stage: Stage, input_doc: dict[str, Any]) -> Decision:
        return await self.current.decide(stage, input_doc)

    async def reload(self, config: Policies | None = None) -> None:
        """Recompile from ``config`` (default: the current one); on PolicyLoadError the old set stays."""
        config = config or self.config
        new = build_decision_point(config)
        old, self.current, self.config = self.current, new, config
        await _retire(old)

    async def aclose(self) -> None:
        await _retire(self.current, grace_s=0.0)


async def _retire(point: DecisionPoint, grace_s: float | None = None) -> None:
    """An OPA client is closed once the queries it may still carry have timed out."""
    if isinstance(point, OpaDecisionPoint):
        await asyncio.sleep(point.timeout_s if grace_s is None else grace_s)
        await point.aclose()
