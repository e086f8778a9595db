"""The ``embedded`` decision point: Rego evaluated in-process, on the event-loop thread."""

from __future__ import annotations

import time
from typing import Any, Literal

from sshgate.policy.decision import Decision, Stage
from sshgate.policy.mapping import to_decision, unavailable
from sshgate.policy.rego import RegoEngine, RegoError

PACKAGE = "data.formal.v2"


class EmbeddedDecisionPoint:
    def __init__(self, engine: RegoEngine, default_action: Literal["allow", "block"]) -> None:
        self.engine = engine
        self.default_action = default_action

    def has_rule(self, stage: Stage) -> bool:
        return self.engine.has_rule(f"{PACKAGE}.{stage}")

    async def decide(self, stage: Stage, input_doc: dict[str, Any]) -> Decision:
        return self.decide_now(stage, input_doc)

    def decide_now(self, stage: Stage, input_doc: dict[str, Any]) -> Decision:
        """Synchronous on purpose: the engine is thread-bound, so no await may split input and eval."""
        start = time.perf_counter()
        try:
            result = self.engine.eval_rule(f"{PACKAGE}.{stage}", input_doc) if self.has_rule(stage) else None
        except RegoError as exc:
            return unavailable(stage, f"policy evaluation failed: {exc}", time.perf_counter() - start)
        return to_decision(stage, result, self.default_action, time.perf_counter() - start)
