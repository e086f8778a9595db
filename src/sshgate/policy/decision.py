"""Policy decisions and the decision point the gateway asks, whatever engine sits behind it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

Stage = Literal["session", "request"]


@dataclass(frozen=True, slots=True)
class Decision:
    """``message`` may be shown to the client; ``reason`` goes only to the audit log."""

    action: Literal["allow", "block", "mfa"]
    stage: Stage
    message: str | None = None
    reason: str = ""
    eval_seconds: float = 0.0

    @property
    def allowed(self) -> bool:
        """``mfa`` is not allowed yet: the gateway first asks for a fresh sign-in (docs/oidc.md)."""
        return self.action == "allow"

    def client_text(self) -> str:
        return "Blocked by policy" + (f": {self.message}" if self.message else "")


class DecisionPoint(Protocol):
    async def decide(self, stage: Stage, input_doc: dict[str, Any]) -> Decision: ...

    def has_rule(self, stage: Stage) -> bool: ...

    async def aclose(self, grace_s: float = 0.0) -> None:
        """Release the engine once decisions in flight have had ``grace_s`` to finish."""
        ...


class AllowAll:
    """The decision point when no policy is configured."""

    async def decide(self, stage: Stage, input_doc: dict[str, Any]) -> Decision:
        return Decision("allow", stage, reason="no policies configured")

    def has_rule(self, stage: Stage) -> bool:
        return False

    async def aclose(self, grace_s: float = 0.0) -> None:
        return None
