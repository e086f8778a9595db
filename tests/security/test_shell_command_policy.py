"""``formal web-1 --shell CMD`` is a command (docs/login.md): the request rule is asked with
``kind: shell, command: CMD``, with a terminal or without, and CMD is in the recording."""

from __future__ import annotations

import shlex
import uuid
from pathlib import Path

import pytest

from tests.conftest import Keys
from tests.security.conftest import recording
from tests.support.gateway import Client, GatewayProcess


@pytest.fixture
def alice(guarded: GatewayProcess, keys: Keys, tmp_path: Path) -> Client:
    return Client(guarded, keys.alice, tmp_path / "alice")


@pytest.mark.parametrize("pty", ["-T", "-tt"])
def test_blocked_shell_program_never_runs(guarded: GatewayProcess, alice: Client, pty: str) -> None:
    marker = Path(f"/tmp/sg-shell-{uuid.uuid4().hex[:8]}")
    program = f"/bin/sh -c 'touch {marker}; echo forbidden'"
    result = alice.ssh("alice", f"formal web-1 --shell {shlex.quote(program)}", options=[pty])
    assert result.returncode == 1
    message = f'sshgate: Blocked by policy: shell program "{program}" is not allowed'
    assert message.encode() in result.stderr, result.stderr
    assert not marker.exists()
    event = guarded.wait_event("request.blocked", kind="shell", command=program)
    assert event["message"] == f'shell program "{program}" is not allowed'


@pytest.mark.parametrize("pty", ["-T", "-tt"])
def test_allowed_shell_program_is_asked_and_recorded(
    guarded: GatewayProcess, alice: Client, pty: str
) -> None:
    program = f"/bin/echo shell-{uuid.uuid4().hex[:8]}"
    result = alice.ssh("alice", f"formal web-1 --shell {shlex.quote(program)}", options=[pty])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == program.split()[1].encode()
    decision = guarded.wait_event("policy.decision", stage="request", kind="shell", command=program)
    assert decision["action"] == "allow"
    doc = recording(guarded, decision["session_id"])
    [channel] = doc["channels"]
    assert (channel["kind"], channel["command"], channel["pty"]) == ("shell", program, pty == "-tt")
    request_decisions = [d for d in doc["decisions"] if d["stage"] == "request"]
    assert request_decisions == [
        {**request_decisions[0], "action": "allow", "kind": "shell", "command": program}
    ]


def test_plain_shell_is_asked_without_a_command(guarded: GatewayProcess, alice: Client) -> None:
    result = alice.ssh("alice+web-1", input=b"echo plain-shell\n", options=["-T"])
    assert result.stdout == b"plain-shell\n", result.stderr
    session = guarded.wait_event("session.start", resource="web-1")["session_id"]
    decision = guarded.wait_event("policy.decision", stage="request", kind="shell", session_id=session)
    assert decision["action"] == "allow" and "command" not in decision
