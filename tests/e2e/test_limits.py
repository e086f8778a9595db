"""Limits and graceful shutdown: each refusal is one clear line for the client and an audit event."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.recording.helpers import closed_sessions
from tests.support.gateway import Client, GatewayProcess
from tests.support.terminal import Terminal


@pytest.fixture
def limited(
    keys: Keys, upstream: Upstream, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[GatewayProcess]:
    config: dict[str, Any] = base_config(keys, upstream)
    config["limits"] = {**config["limits"], **request.param}
    config["shutdown_grace_s"] = 2
    gw = GatewayProcess(tmp_path / "gw", config).start()
    yield gw
    gw.stop()


def _background(client: Client, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        client.ssh_argv("alice+web-1", *args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("limited", [{"max_sessions_per_user": 2}], indirect=True)
def test_sessions_per_user(limited: GatewayProcess, keys: Keys, tmp_path: Path) -> None:
    alice = Client(limited, keys.alice, tmp_path / "alice")
    held = [_background(alice, "echo up; sleep 20") for _ in range(2)]
    try:
        for proc in held:
            assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        third = alice.ssh("alice+web-1", "true")
        assert third.returncode == 1
        assert (
            third.stderr == b"sshgate: too many open sessions for alice@corp.com (limit 2); close one first\n"
        )
        limited.wait_event("session.refused", event_kind="limit.sessions_per_user")
    finally:
        for proc in held:
            proc.kill()
            proc.communicate()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alice.ssh("alice+web-1", "true").returncode != 0:
        time.sleep(0.2)
    assert alice.ssh("alice+web-1", "echo again").stdout == b"again\n"


@pytest.mark.parametrize("limited", [{"idle_timeout_s": 1.5}], indirect=True)
def test_idle_timeout_closes_idle_not_busy(limited: GatewayProcess, keys: Keys, tmp_path: Path) -> None:
    alice = Client(limited, keys.alice, tmp_path / "alice")
    idle = _background(alice, "sleep 30")
    busy = _background(alice, "for i in $(seq 12); do echo tick; sleep 0.4; done")
    _, idle_err = idle.communicate(timeout=15)
    assert b"sshgate: session closed after 1.5 s without activity" in idle_err
    busy_out, _ = busy.communicate(timeout=30)
    assert busy_out.count(b"tick") == 12 and busy.returncode == 0
    limited.wait_event("limit.idle")
    ended = closed_sessions(Path(limited.config["data_dir"]) / "recordings", 2)
    assert sorted(doc["end_reason"] for doc in ended) == ["idle_timeout", "upstream"]


@pytest.mark.parametrize("limited", [{"max_session_s": 1.5}], indirect=True)
def test_max_session_length(limited: GatewayProcess, keys: Keys, tmp_path: Path) -> None:
    alice = Client(limited, keys.alice, tmp_path / "alice")
    start = time.monotonic()
    result = alice.ssh("alice+web-1", "while true; do echo busy; sleep 0.2; done", timeout=20)
    assert time.monotonic() - start < 10
    assert b"sshgate: session closed: it reached the maximum length of 1.5 s" in result.stderr
    assert result.returncode == 255
    (doc,) = closed_sessions(Path(limited.config["data_dir"]) / "recordings", 1)
    assert (doc["status"], doc["end_reason"]) == ("closed", "max_session")


@pytest.mark.parametrize("limited", [{"login_grace_s": 1}], indirect=True)
def test_login_grace(limited: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as sock:
        sock.sendall(b"SSH-2.0-OpenSSH_9.2 silent\r\n")
        start = time.monotonic()
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert time.monotonic() - start < 5
    assert data.startswith(b"SSH-2.0-sshgate")


@pytest.mark.parametrize("limited", [{"max_unauthenticated": 2, "login_grace_s": 30}], indirect=True)
def test_max_unauthenticated(limited: GatewayProcess, keys: Keys, tmp_path: Path) -> None:
    hold = [socket.create_connection(("127.0.0.1", limited.port), timeout=10) for _ in range(2)]
    try:
        for sock in hold:
            sock.sendall(b"SSH-2.0-OpenSSH_9.2 holding\r\n")
            assert sock.recv(64).startswith(b"SSH-2.0-sshgate")
        result = Client(limited, keys.alice, tmp_path / "alice").ssh("alice+web-1", "true")
        assert result.returncode == 255
        assert b"gateway busy: too many connections are logging in" in result.stderr
        limited.wait_event("connection.refused")
    finally:
        for sock in hold:
            sock.close()


@pytest.mark.parametrize("limited", [{}], indirect=True)
def test_sigterm_drains_then_notifies(limited: GatewayProcess, keys: Keys, tmp_path: Path) -> None:
    alice = Client(limited, keys.alice, tmp_path / "alice")
    term = Terminal(alice.ssh_argv("alice+web-1", options=["-tt"]))
    try:
        term.write("echo ready-$((40+2))\n")
        term.read_until("ready-42")
        start = time.monotonic()
        limited.signal(signal.SIGTERM)
        term.read_until("the gateway is restarting; please reconnect", timeout=10)
        assert limited.process is not None
        assert limited.process.wait(timeout=10) == 0
        # shutdown_grace_s is 2: the session was held open that long, then closed.
        assert 1.5 < time.monotonic() - start < 8
        limited.wait_event("session.drained")
        limited.wait_event("gateway.stopped")
        recordings = Path(limited.config["data_dir"]) / "recordings"
        (manifest,) = recordings.glob("[0-9]*/*/session.json")
        doc = json.loads(manifest.read_text())
        assert (doc["status"], doc["end_reason"]) == ("closed", "drain")
    finally:
        term.close()
