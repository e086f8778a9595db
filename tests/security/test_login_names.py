"""Login names an attacker sends: every refused name leaves a ``login.invalid`` event whichever
layer refused it, and the ``idp:<provider>`` word cannot be chosen by the client."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.conftest import Keys
from tests.security.attacker import attempt, names_as_sent
from tests.support.gateway import Client, GatewayProcess


@pytest.mark.parametrize(
    ("login", "reason"),
    [
        ("alice\x00+web-1", "control, space or non-ASCII"),
        ("alice\n+web-1", "control, space or non-ASCII"),
        ("alice\r\nsshgate: fake line", "control, space or non-ASCII"),
        ("\x1b[2Jalice+web-1", "control, space or non-ASCII"),
        ("alice\x7f+web-1", "control, space or non-ASCII"),
        ("\uff41\uff4c\uff49\uff43\uff45+web-1", "control, space or non-ASCII"),  # full-width alice
        ("alice\u200b+web-1", "control, space or non-ASCII"),  # SASLprep would drop it: "alice+web-1"
        ("alice+" + "w" * 300, "longer than 256 bytes"),
    ],
    ids=["nul", "newline", "crlf", "escape", "del", "fullwidth", "zero-width", "over-256"],
)
def test_malformed_names_are_refused_with_an_event(
    gateway: GatewayProcess, keys: Keys, login: str, reason: str
) -> None:
    with names_as_sent():
        outcome = asyncio.run(attempt(gateway.port, login, passwords=[keys.alice_token]))
    assert not outcome.ok
    assert outcome.error.startswith("invalid login: ") and reason in outcome.error, outcome.error
    event = gateway.wait_event("login.invalid", login=login[:300])
    assert reason in event["reason"]
    assert not [e for e in gateway.events("auth.success") if e["session_id"] == event["session_id"]]


def test_names_asyncssh_refuses_itself_leave_an_event(gateway: GatewayProcess, keys: Keys) -> None:
    """1024 bytes and more are refused inside asyncssh, before the gateway sees the name."""
    before = len(gateway.events("login.invalid", reason="Username too long"))
    outcome = asyncio.run(attempt(gateway.port, "a" * 2000, passwords=[keys.alice_token]))
    assert not outcome.ok and outcome.error == "Username too long"
    assert len(gateway.wait_events("login.invalid", before + 1, reason="Username too long")) == before + 1


def test_the_login_cannot_change_during_authentication(gateway: GatewayProcess, keys: Keys) -> None:
    outcome = asyncio.run(
        attempt(
            gateway.port, "idp:human:nobody@corp.com", passwords=[keys.alice_token], switch_to="alice+web-1"
        )
    )
    assert not outcome.ok and "the login changed during authentication" in outcome.error
    gateway.wait_event("login.invalid", login="alice+web-1", reason="the login changed during authentication")
    assert not gateway.events("auth.success", method="password", identity="nobody@corp.com")


@pytest.mark.parametrize(
    "login",
    ["idp:okta:human:alice@corp.com+web-1", "idp:okta:machine:ci-bot+web-1", "idp:x:human:alice@corp.com"],
)
def test_a_login_naming_another_provider_is_refused(
    gateway: GatewayProcess, keys: Keys, tmp_path: Path, login: str
) -> None:
    """The right credential does not help: configured identities come from provider formal."""
    successes = len(gateway.events("auth.success"))
    key = keys.bot if ":machine:" in login else keys.alice
    by_key = Client(gateway, key, tmp_path).ssh(login, "id -un")
    assert by_key.returncode == 255 and by_key.stdout == b""
    assert by_key.stderr.splitlines()[-1].endswith(
        b"Permission denied (publickey,keyboard-interactive,password)."
    ), by_key.stderr
    assert b"provider" not in by_key.stderr  # before authentication it looks like any failure
    if ":human:" in login:
        by_token = asyncio.run(attempt(gateway.port, login, passwords=[keys.alice_token]))
        assert not by_token.ok
        provider = login.split(":")[1]
        reason = f"the login names provider {provider}; configured identities are formal"
        gateway.wait_event("auth.failure", method="password", identity="alice@corp.com", reason=reason)
    assert len(gateway.events("auth.success")) == successes


def test_the_provider_in_policy_input_and_recordings_is_the_identitys(
    gateway: GatewayProcess, keys: Keys, tmp_path: Path
) -> None:
    alice = Client(gateway, keys.alice, tmp_path)
    assert alice.ssh("idp:formal:human:alice@corp.com+web-1", "echo ok").stdout == b"ok\n"
    session_id = gateway.wait_event("auth.success", identity="alice@corp.com")["session_id"]
    recordings = Path(gateway.config["data_dir"]) / "recordings"
    (manifest,) = recordings.glob(f"[0-9]*/{session_id}/session.json")
    assert json.loads(manifest.read_text())["identity"] == "idp:formal:human:alice@corp.com"
