"""One source address cannot starve everyone: 150 idle TCP connections from 127.0.0.1 keep
max_unauthenticated_per_source (10) slots, the rest are dropped at once, and 127.0.0.2 logs in."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.support.gateway import Client, GatewayProcess

PER_SOURCE = 10


@pytest.fixture
def gw(keys: Keys, upstream: Upstream, tmp_path: Path) -> Iterator[GatewayProcess]:
    config = base_config(keys, upstream)
    config["limits"] = {**config["limits"], "login_grace_s": 60}  # defaults: 100 in all, 10 per source
    proc = GatewayProcess(tmp_path / "gw", config).start()
    yield proc
    proc.stop()


def _open_fds(gw: GatewayProcess) -> int:
    assert gw.process is not None
    return len(os.listdir(f"/proc/{gw.process.pid}/fd"))


def _first_bytes(sock: socket.socket) -> bytes:
    """What the gateway sent first: its banner, or b"" when it dropped the connection."""
    sock.settimeout(10)
    try:
        return sock.recv(64)
    except ConnectionResetError:
        return b""


def test_idle_connections_from_one_source_do_not_lock_out_others(
    gw: GatewayProcess, keys: Keys, tmp_path: Path
) -> None:
    alice = Client(gw, keys.alice, tmp_path / "alice")
    assert alice.ssh("alice+web-1", "true").returncode == 0  # the gateway's lazy imports are done
    baseline = _open_fds(gw)
    flood = [socket.create_connection(("127.0.0.1", gw.port), timeout=10) for _ in range(150)]
    try:
        first = [_first_bytes(sock) for sock in flood]
        assert sum(data.startswith(b"SSH-2.0-sshgate") for data in first) == PER_SOURCE
        assert first.count(b"") == 150 - PER_SOURCE  # dropped before the banner
        assert (
            len(gw.wait_events("connection.dropped", 150 - PER_SOURCE, client_ip="127.0.0.1"))
            == 150 - PER_SOURCE
        )
        start = time.monotonic()
        other = alice.ssh("alice+web-1", "echo other-source", options=["-o", "BindAddress=127.0.0.2"])
        assert other.stdout == b"other-source\n", other.stderr
        assert time.monotonic() - start < 20
        same = alice.ssh("alice+web-1", "true", options=["-o", "ConnectTimeout=5"])
        assert same.returncode == 255 and b"Connection closed" in same.stderr, same.stderr
    finally:
        for sock in flood:
            sock.close()
    deadline = time.monotonic() + 20
    while alice.ssh("alice+web-1", "true").returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.2)  # the gateway sees the closes and frees the source's slots
    assert alice.ssh("alice+web-1", "echo back").stdout == b"back\n"
    deadline = time.monotonic() + 10
    while _open_fds(gw) > baseline + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _open_fds(gw) <= baseline + 2, "the flood left descriptors open"


def test_authenticated_connections_free_their_slot(gw: GatewayProcess, keys: Keys, tmp_path: Path) -> None:
    """The per-source cap counts connections still logging in, not sessions: more sessions than
    the cap stay open side by side from one address."""
    alice = Client(gw, keys.alice, tmp_path / "alice")
    held: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(PER_SOURCE + 5):
            proc = subprocess.Popen(
                alice.ssh_argv("alice+web-1", "echo up; sleep 30"),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
            )
            held.append(proc)
            assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        assert all(proc.poll() is None for proc in held)
        assert not gw.events("connection.dropped")
    finally:
        for proc in held:
            proc.kill()
            proc.communicate()
