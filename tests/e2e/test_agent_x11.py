"""Agent and X11 forwarding are refused: the upstream never sees the client's agent or display."""

from __future__ import annotations

import os
import subprocess

from tests.support.gateway import Client


def test_agent_forwarding_refused(alice: Client) -> None:
    agent = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True).stdout
    env = dict(os.environ)
    for part in agent.split(";"):
        if "=" in part and part.strip().startswith("SSH_"):
            name, value = part.strip().split("=", 1)
            env[name] = value
    try:
        result = subprocess.run(
            alice.ssh_argv(
                "alice+web-1", "echo agent=${SSH_AUTH_SOCK:-none}", options=["-A", "-o", "LogLevel=INFO"]
            ),
            capture_output=True,
            env=env,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    finally:
        subprocess.run(["ssh-agent", "-k"], env=env, capture_output=True)
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
