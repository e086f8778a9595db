"""The embedded engine: Formal-style policies unchanged, errors named at load, failures closed."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from sshgate.config import Policies
from sshgate.policy.decision import AllowAll
from sshgate.policy.embedded import EmbeddedDecisionPoint
from sshgate.policy.loader import build_decision_point
from sshgate.policy.opa import OpaDecisionPoint
from sshgate.policy.sources import PolicyLoadError

from .conftest import POLICIES

JOHN = {"native_user": "devops", "user": {"email": "john@corp.com", "groups": []}}
ALICE = {"native_user": "devops", "user": {"email": "alice@corp.com", "groups": []}}
BLOCK = '{"action": "block", "type": "block_with_formal_message", "message": "not you"}'

STYLES = {
    "formal_docs": f"""package formal.v2

import future.keywords.if
import future.keywords.in

session := {BLOCK} if {{
    input.native_user == "devops"
    input.user.email in ["john@corp.com"]
}}
""",
    "legacy_v0": f"""package formal.v2

session = {BLOCK} {{
    input.native_user == "devops"
    input.user.email == "john@corp.com"
}}
""",
    "rego_v1_import": f"""package formal.v2

import rego.v1

blocked contains input.user.email if input.native_user == "devops"

session := {BLOCK} if "john@corp.com" in blocked
""",
    "bare_v1": f"""package formal.v2

default session := {{"action": "allow"}}

session := {BLOCK} if {{
    some user in ["john@corp.com"]
    input.user.email == user
    input.native_user == "devops"
}}
""",
}


@asynccontextmanager
async def _point(
    tmp_path: Path, default: str = "allow", **files: str
) -> AsyncIterator[EmbeddedDecisionPoint]:
    for name, text in files.items():
        (tmp_path / f"{name}.rego").write_text(text)
    point = await build_decision_point(Policies(paths=[str(tmp_path)], default_action=default))  # type: ignore[arg-type]
    assert isinstance(point, EmbeddedDecisionPoint)
    try:
        yield point
    finally:
        await point.aclose()


@pytest.mark.parametrize("style", sorted(STYLES))
async def test_formal_styles_run_unchanged(tmp_path: Path, style: str) -> None:
    async with _point(tmp_path, "block", policy=STYLES[style]) as point:
        john, alice = await point.decide("session", JOHN), await point.decide("session", ALICE)
        assert point.has_rule("session") and not point.has_rule("request")
    assert john.client_text() == "Blocked by policy: not you"
    assert alice.action == ("allow" if style == "bare_v1" else "block")  # undefined → default_action: block


async def test_request_rule_undefined_allows_under_default_block(tmp_path: Path) -> None:
    # default_action is the session rule's; the request rule only refuses what it answers a block for.
    policy = f"""package formal.v2
import rego.v1

session := {{"action": "allow"}}

request := {BLOCK} if input.request.command == "rm -rf /"
"""
    async with _point(tmp_path, "block", policy=policy) as point:
        ls = await point.decide("request", {**ALICE, "request": {"kind": "exec", "command": "ls"}})
        rm = await point.decide("request", {**ALICE, "request": {"kind": "exec", "command": "rm -rf /"}})
    assert ls.allowed and ls.reason == "request undefined: allowed"
    assert rm.client_text() == "Blocked by policy: not you"


async def test_factory_choices(tmp_path: Path) -> None:
    assert isinstance(await build_decision_point(Policies()), AllowAll)
    assert isinstance(await build_decision_point(Policies(engine="opa")), OpaDecisionPoint)
    shipped = await build_decision_point(Policies(paths=[str(POLICIES)]))
    try:
        assert shipped.has_rule("session") and shipped.has_rule("request")
    finally:
        await shipped.aclose()
    with pytest.raises(PolicyLoadError, match="nowhere: no such policy file or directory"):
        await build_decision_point(Policies(paths=[str(tmp_path / "nowhere")]))
    with pytest.raises(PolicyLoadError, match=r"no \.rego policy files under"):
        await build_decision_point(Policies(paths=[str(tmp_path)]))


async def test_test_files_are_not_served(tmp_path: Path) -> None:
    rules = {"policy": STYLES["bare_v1"], "policy_test": "package formal.v2\nrequest := 1\n"}
    async with _point(tmp_path, **rules) as point:
        assert not point.has_rule("request")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "package formal.v2\nimport rego.v1\nsession := if {\n",
            r"broken\.rego:3:12: unexpected keyword `if`",
        ),
        ("package formal.v2\nimport rego.v1\nsession := x\n", r"broken\.rego:3:12: var x is unsafe"),
        (
            "package formal.v2\nsession := nosuch(input)\n",
            r"broken\.rego:2:18: could not find function nosuch",
        ),
    ],
)
async def test_compile_errors_name_the_file(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(PolicyLoadError, match=error):
        async with _point(tmp_path, ok=STYLES["bare_v1"], broken=text):
            pass


async def test_conflicting_rules_fail_closed(tmp_path: Path) -> None:
    allow = 'package formal.v2\nsession := {"action": "allow"}\n'
    async with _point(tmp_path, a=STYLES["formal_docs"], b=allow) as point:
        decision = await point.decide("session", JOHN)
        assert (await point.decide("session", ALICE)).allowed
    assert decision.client_text() == "Blocked by policy: policy unavailable"
    assert decision.reason.startswith("policy evaluation failed: ") and "conflict" in decision.reason
