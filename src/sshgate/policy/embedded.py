"""The ``embedded`` decision point: Rego evaluated by regorus in worker processes, under a deadline."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

from sshgate.policy.decision import Decision, Stage
from sshgate.policy.input import identity_key
from sshgate.policy.mapping import timed_out, to_decision, unavailable
from sshgate.policy.pool import EnginePool, EngineTimeout
from sshgate.policy.rego import RegoError
from sshgate.policy.sources import RegoModule

PACKAGE = "data.formal.v2"


class EmbeddedDecisionPoint:
    """A rule that errs or is still running at ``timeout_ms`` denies; neither stalls the gateway.

    Each identity's decisions are made one at a time, so a rule that is slow for one user holds
    one worker process, not all of them.
    """

    def __init__(self, pool: EnginePool, default_action: Literal["allow", "block"]) -> None:
        self.pool = pool
        self.default_action = default_action

    @classmethod
    async def start(
        cls, modules: Sequence[RegoModule], default_action: Literal["allow", "block"], timeout_ms: int
    ) -> EmbeddedDecisionPoint:
        """Compile in the workers; raises PolicyLoadError."""
        return cls(await EnginePool.start(modules, timeout_ms / 1000), default_action)

    def has_rule(self, stage: Stage) -> bool:
        return self.pool.has_rule(f"{PACKAGE}.{stage}")

    async def decide(self, stage: Stage, input_doc: dict[str, Any]) -> Decision:
        start = time.perf_counter()
        if not self.has_rule(stage):
            return to_decision(stage, None, self.default_action, time.perf_counter() - start)
        try:
            result = await self.pool.evaluate(f"{PACKAGE}.{stage}", input_doc, identity_key(input_doc))
        except EngineTimeout as exc:
            return timed_out(stage, str(exc), time.perf_counter() - start)
        except RegoError as exc:
            return unavailable(stage, f"policy evaluation failed: {exc}", time.perf_counter() - start)
        return to_decision(stage, result, self.default_action, time.perf_counter() - start)

    async def aclose(self, grace_s: float = 0.0) -> None:
        await self.pool.aclose(grace_s)
