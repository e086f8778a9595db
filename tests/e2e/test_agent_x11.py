"""Agent forwarding reaches the upstream only where the resource allows it; X11 never does."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import Client, GatewayProcess
from tests.support.sshd import keygen


@pytest.fixture
def agent_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private ssh-agent holding one key nobody else has."""
    started = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True).stdout
    env = dict(os.environ)
    for part in started.split(";"):
        if "=" in part and part.strip().startswith("SSH_"):
            name, value = part.strip().split("=", 1)
            env[name] = value
    key = keygen(tmp_path / "agent_key", "only-in-the-agent")
    subprocess.run(["ssh-add", str(key)], env=env, capture_output=True, check=True)
    env["AGENT_PUB"] = Path(str(key) + ".pub").read_text().split()[1]
    yield env
    subprocess.run(["ssh-agent", "-k"], env=env, capture_output=True)


def _agent_keys(alice: Client, login: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        alice.ssh_argv(login, "echo agent=${SSH_AUTH_SOCK:+set}; ssh-add -L", options=["-A"]),
        capture_output=True,
        env=env,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_agent_forwarding_refused(alice: Client, gateway: GatewayProcess, agent_env: dict[str, str]) -> None:
    result = _agent_keys(alice, "alice+web-1", agent_env)
    assert result.stdout.startswith(b"agent=\n"), result.stdout
    assert agent_env["AGENT_PUB"].encode() not in result.stdout
    gateway.wait_event("request.blocked", kind="agent-forwarding", resource="web-1")


def test_agent_forwarding_allowed(alice: Client, agent_env: dict[str, str]) -> None:
    result = _agent_keys(alice, "alice+web-agent", agent_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"agent=set\n")
    assert agent_env["AGENT_PUB"].encode() in result.stdout


def test_agent_forwarding_allowed_through_formal(alice: Client, agent_env: dict[str, str]) -> None:
    """Routing by command binds at exec time, after the client asked for its agent."""
    result = subprocess.run(
        alice.ssh_argv("alice", "formal", "web-agent", "--", "ssh-add", "-L", options=["-A"]),
        capture_output=True,
        env=agent_env,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert agent_env["AGENT_PUB"].encode() in result.stdout


def test_agent_not_asked_for_stays_off(alice: Client, agent_env: dict[str, str]) -> None:
    result = subprocess.run(
        alice.ssh_argv("alice+web-agent", "echo agent=${SSH_AUTH_SOCK:-none}"),
        capture_output=True,
        env=agent_env,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"agent=none\n"


def test_x11_forwarding_refused(alice: Client) -> None:
    result = subprocess.run(
        alice.ssh_argv("alice+web-1", "echo display=${DISPLAY:-none}", options=["-X", "-o", "LogLevel=INFO"]),
        capture_output=True,
        env={**os.environ, "DISPLAY": "127.0.0.1:99"},
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"display=none\n"
    assert b"X11 forwarding request failed" in result.stderr
