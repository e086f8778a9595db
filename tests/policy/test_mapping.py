"""The decision mapping of docs/policy.md: what every engine's answer means for the client and the audit log."""

from typing import Any

import pytest

from sshgate.policy.mapping import to_decision

BLOCK = {"action": "block", "type": "block_with_formal_message"}


@pytest.mark.parametrize("default", ["allow", "block"])
def test_undefined_takes_default_action(default: Any) -> None:
    decision = to_decision("session", None, default, 0.25)
    assert (decision.action, decision.message, decision.eval_seconds) == (default, None, 0.25)


def test_undefined_request_is_allowed_whatever_the_default() -> None:
    # The session rule already decided; an undefined request answer adds no refusal (DESIGN §6).
    decision = to_decision("request", None, "block", 0.25)
    assert decision.allowed and decision.reason == "request undefined: allowed"


def test_allow() -> None:
    decision = to_decision("request", {"action": "allow"}, "block", 0.0)
    assert decision.allowed and decision.stage == "request"


def test_mfa_is_a_session_action() -> None:
    decision = to_decision("session", {"action": "mfa"}, "allow", 0.0)
    assert decision.action == "mfa" and not decision.allowed  # allowed only after a fresh sign-in
    request = to_decision("request", {"action": "mfa"}, "allow", 0.0)
    assert request.action == "block" and "mfa is a session action" in request.reason


@pytest.mark.parametrize("kind", ["block_with_formal_message", "block_with_custom_message"])
def test_block_with_message(kind: str) -> None:
    decision = to_decision("session", {"action": "block", "type": kind, "message": "not devops"}, "allow", 0.0)
    assert not decision.allowed
    assert decision.client_text() == "Blocked by policy: not devops"


@pytest.mark.parametrize(
    "result",
    [
        BLOCK,
        {**BLOCK, "message": ""},
        {"action": "block", "message": "shown only with Formal's types"},
        {"action": "block", "type": "block_quietly", "message": "shown only with Formal's types"},
    ],
)
def test_block_without_message(result: dict[str, Any]) -> None:
    decision = to_decision("session", result, "allow", 0.0)
    assert decision.action == "block"
    assert decision.client_text() == "Blocked by policy"


@pytest.mark.parametrize(
    ("result", "why"),
    [
        (True, "bool, not an object"),
        (["allow"], "list, not an object"),
        ({}, "action None"),
        ({"action": "permit"}, "action 'permit'"),
        ({**BLOCK, "message": 42}, "message is int"),
    ],
)
def test_malformed_fails_closed(result: Any, why: str) -> None:
    decision = to_decision("session", result, "allow", 0.5)
    assert decision.action == "block"
    assert decision.client_text() == "Blocked by policy: policy unavailable"
    assert decision.reason == f"malformed session result: {why}"
    assert decision.eval_seconds == 0.5
