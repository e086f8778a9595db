"""From a rule's value to a :class:`Decision` (docs/policy.md), the same for every engine.

Anything the gateway cannot read as a decision denies: the client only learns that the policy is
unavailable, the audit log gets the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from sshgate.policy.decision import Decision, Stage

UNAVAILABLE = "policy unavailable"
# The block types whose message the client reads (docs/policy.md, "Results").
BLOCK_TYPES = ("block_with_formal_message", "block_with_custom_message")


def unavailable(stage: Stage, reason: str, eval_seconds: float = 0.0) -> Decision:
    return Decision("block", stage, message=UNAVAILABLE, reason=reason, eval_seconds=eval_seconds)


def timed_out(stage: Stage, what: str, eval_seconds: float) -> Decision:
    """The engine's answer did not come by ``policies.timeout_ms``: deny (fail closed)."""
    return unavailable(stage, f"policy timeout: {what}", eval_seconds)


def to_decision(
    stage: Stage, result: Any, default_action: Literal["allow", "block"], eval_seconds: float
) -> Decision:
    """``None`` (undefined) → ``default_action`` for the session rule, allowed for the request rule
    (the session rule already decided); ``allow``/``block``/``mfa`` objects; anything else denies.
    ``mfa`` counts only at the session stage; a request rule that answers it blocks."""
    if result is None and stage == "request":
        return Decision("allow", stage, reason="request undefined: allowed", eval_seconds=eval_seconds)
    if result is None:
        return Decision(
            default_action, stage, reason=f"{stage} undefined: default_action", eval_seconds=eval_seconds
        )
    problem = _malformed(result)
    if problem is None and stage == "request" and result["action"] == "mfa":
        problem = "mfa is a session action"
    if problem:
        return unavailable(stage, f"malformed {stage} result: {problem}", eval_seconds)
    if result["action"] == "allow":
        return Decision("allow", stage, reason="allowed by policy", eval_seconds=eval_seconds)
    if result["action"] == "mfa":
        return Decision("mfa", stage, reason="policy asks for a fresh sign-in", eval_seconds=eval_seconds)
    # A message is shown only with one of Formal's block types; any other type still blocks.
    message = result.get("message") if result.get("type") in BLOCK_TYPES else None
    return Decision(
        "block", stage, message=message or None, reason="blocked by policy", eval_seconds=eval_seconds
    )


def _malformed(result: Any) -> str | None:
    if not isinstance(result, Mapping):
        return f"{type(result).__name__}, not an object"
    if result.get("action") not in ("allow", "block", "mfa"):
        return f"action {result.get('action')!r}"
    message = result.get("message")
    if message is not None and not isinstance(message, str):
        return f"message is {type(message).__name__}"
    return None
