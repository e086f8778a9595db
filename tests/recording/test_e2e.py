"""Recordings of real sessions: real ssh/sftp clients -> sshgate -> a real sshd, then the files."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.e2e.test_forward import ssh_background
from tests.recording.helpers import cast_text, lines, session_doc
from tests.support.gateway import Client, GatewayProcess
from tests.support.net import free_port, wait_port
from tests.support.sshd import keygen
from tests.support.tcp import echo_server, recv_exact
from tests.support.terminal import Terminal


@pytest.fixture(scope="module")
def recorded(
    keys: Keys, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("recorded")
    keygen(root / "signing", "recordings")
    config = base_config(keys, upstream)
    config["recording"] = {"dir": str(root / "recordings"), "signing_key": str(root / "signing")}
    gw = GatewayProcess(root / "gw", config).start()
    yield gw
    gw.stop()


def _rec_root(gw: GatewayProcess) -> Path:
    return Path(gw.config["recording"]["dir"])


def _session(gw: GatewayProcess, session_id: str, timeout: float = 10) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(_rec_root(gw).glob(f"[0-9]*/{session_id}"))
        if found and session_doc(found[0]).get("status") != "active":
            return found[0]
        time.sleep(0.1)
    raise TimeoutError(f"no closed recording for {session_id}")


def _last_session_id(gw: GatewayProcess, resource: str = "web-1") -> str:
    return str(gw.wait_event("session.start", resource=resource)["session_id"])


def _verify(gw: GatewayProcess, session_id: str) -> subprocess.CompletedProcess[bytes]:
    argv = [
        sys.executable,
        "-m",
        "sshgate.cli",
        "recordings",
        "verify",
        session_id,
        "--config",
        str(gw.config_path),
    ]
    return subprocess.run(argv, capture_output=True)


def test_pty_session_cast_plays_and_keeps_no_password(
    recorded: GatewayProcess, keys: Keys, tmp_path: Path
) -> None:
    alice = Client(recorded, keys.alice, tmp_path)
    before = {e["session_id"] for e in recorded.events("session.start")}
    term = Terminal(alice.ssh_argv("alice+web-1", options=["-tt"]), rows=30, cols=100)
    try:
        term.write("PS1='rec> '; echo visible-$((40+2))\n")
        term.read_until("visible-42")
        # The prompt shows once echo is off, and the echoed command line does not contain it.
        term.write("stty -echo; printf '%s: ' Password; read secret; stty echo; echo; echo got-${#secret}\n")
        term.read_until("Password: ")
        term.write("hunter2-not-recorded\n")
        term.read_until("got-20")
        term.resize(40, 120)
        term.write("stty size\n")
        term.read_until(r"40 120")
        term.write("exit\n")
        assert term.wait(timeout=15) == 0
    finally:
        term.close()
    (session_id,) = {e["session_id"] for e in recorded.events("session.start")} - before
    directory = _session(recorded, session_id)
    played = cast_text(directory / "1-shell.cast")
    assert "visible-42" in played and "got-20" in played
    events = [json.loads(line) for line in (directory / "1-shell.cast").read_text().splitlines()[1:]]
    assert any(e[1] == "r" and e[2] == "120x40" for e in events)
    assert not any(e[1] == "i" for e in events)
    for file in directory.iterdir():
        assert b"hunter2-not-recorded" not in file.read_bytes(), file.name
    doc = session_doc(directory)
    assert doc["status"] == "closed" and doc["channels"][0]["kind"] == "shell"
    verify = _verify(recorded, session_id)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    cast = directory / "1-shell.cast"
    data = bytearray(cast.read_bytes())
    data[-3] ^= 1
    cast.write_bytes(bytes(data))
    tampered = _verify(recorded, session_id)
    assert tampered.returncode != 0 and b"1-shell.cast" in tampered.stdout + tampered.stderr


def test_exec_sftp_and_forward_files(recorded: GatewayProcess, keys: Keys, tmp_path: Path) -> None:
    alice = Client(recorded, keys.alice, tmp_path)
    before = {e["session_id"] for e in recorded.events("session.start")}
    assert alice.ssh("alice+web-1", "head -c 5000 /dev/zero | tr '\\0' x").stdout == b"x" * 5000
    local = tmp_path / "up.bin"
    local.write_bytes(b"y" * 70000)
    remote = f"/tmp/sshgate-rec-{tmp_path.name[-6:]}"
    batch = f"put {local} {remote}\nrename {remote} {remote}.2\nget {remote}.2 {tmp_path}/down.bin\nrm {remote}.2\n"
    assert alice.sftp("alice+web-1", batch).returncode == 0
    with echo_server() as target:
        port = free_port()
        with ssh_background(alice, "alice+web-1", ["-N", "-L", f"127.0.0.1:{port}:127.0.0.1:{target}"]):
            wait_port(port)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"z" * 3000)
                recv_exact(sock, 3000)
            time.sleep(0.5)
    new = [e["session_id"] for e in recorded.events("session.start") if e["session_id"] not in before]
    dirs = [_session(recorded, sid) for sid in new]
    files = {f.name: f for d in dirs for f in d.iterdir()}
    exec_cast = next(f for name, f in files.items() if name.endswith("-exec.cast"))
    assert cast_text(exec_cast) == "x" * 5000
    sftp_events = lines(next(f for name, f in files.items() if name.endswith("-sftp.jsonl")))
    ops = [e["op"] for e in sftp_events]
    assert {"open", "close", "rename", "remove"} <= set(ops)
    closes = [e for e in sftp_events if e["op"] == "close" and e.get("bytes")]
    assert {"read": 0, "written": 70000} in [c["bytes"] for c in closes]
    assert {"read": 70000, "written": 0} in [c["bytes"] for c in closes]
    forward = lines(next(f for name, f in files.items() if name.endswith("-forward.jsonl")))
    closed = [e for e in forward if e.get("event", e.get("op")) == "close"]
    assert closed and json.dumps(closed[-1]).count("3000") >= 2, forward


def test_kill_9_leaves_a_readable_cast_marked_interrupted(
    keys: Keys, upstream: Upstream, tmp_path: Path
) -> None:
    config = base_config(keys, upstream)
    config["recording"] = {"dir": str(tmp_path / "recordings")}
    gw = GatewayProcess(tmp_path / "gw", config).start()
    alice = Client(gw, keys.alice, tmp_path / "alice")
    term = Terminal(alice.ssh_argv("alice+web-1", options=["-tt"]))
    try:
        term.write("echo before-the-crash\n")
        term.read_until("before-the-crash")
        time.sleep(1.5)  # past one flush
        session_id = gw.wait_event("session.start")["session_id"]
        assert gw.process is not None
        gw.process.send_signal(signal.SIGKILL)
        gw.process.wait(timeout=10)
    finally:
        term.close()
    (directory,) = (tmp_path / "recordings").glob(f"[0-9]*/{session_id}")
    assert "before-the-crash" in cast_text(directory / "1-shell.cast")
    assert session_doc(directory)["status"] == "active"
    gw.start()
    try:
        event = gw.wait_event("recording.interrupted")
        assert session_id in event["sessions"]
        assert session_doc(directory)["status"] == "interrupted"
    finally:
        gw.stop()
