"""Recordings of real sessions: real ssh/scp/sftp/rsync clients -> sshgate -> a real sshd, then
the files, read back with the stock scriptreplay and asciinema and the `recordings` CLI."""

from __future__ import annotations

import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sshgate.recording.manifest import verify
from tests.conftest import Keys, Upstream, base_config
from tests.e2e.test_forward import ssh_background
from tests.recording.helpers import (
    cast_events,
    cast_text,
    cli,
    lines,
    payload,
    scriptreplay,
    session_doc,
)
from tests.support.gateway import Client, GatewayProcess
from tests.support.net import free_port, wait_port
from tests.support.sshd import keygen
from tests.support.tcp import echo_server, recv_exact
from tests.support.terminal import Terminal

BINARY = bytes(range(256)) * (20 * 4096)  # every byte value, 20 MiB
MAKE_BINARY = "python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * (20 * 4096))'"


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


def _session(gw: GatewayProcess, session_id: str, timeout: float = 15) -> Path:
    """The session's directory once it has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(_rec_root(gw).glob(f"[0-9]*/{session_id}"))
        if found and session_doc(found[0]).get("status") != "active":
            return found[0]
        time.sleep(0.1)
    raise TimeoutError(f"no closed recording for {session_id}")


def _new_sessions(gw: GatewayProcess, before: set[str]) -> list[Path]:
    return [
        _session(gw, e["session_id"]) for e in gw.events("session.start") if e["session_id"] not in before
    ]


def _started(gw: GatewayProcess) -> set[str]:
    return {e["session_id"] for e in gw.events("session.start")}


def _recordings(gw: GatewayProcess, *argv: str) -> subprocess.CompletedProcess[bytes]:
    return cli(*argv, "--config", str(gw.config_path))


def test_pty_session_replays_with_scriptreplay_and_exports_for_asciinema(
    recorded: GatewayProcess, keys: Keys, tmp_path: Path
) -> None:
    alice = Client(recorded, keys.alice, tmp_path)
    before = _started(recorded)
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
    (directory,) = _new_sessions(recorded, before)
    session_id = directory.name
    assert sorted(p.name for p in directory.iterdir()) == ["1-shell.out", "1-shell.timing", "session.json"]

    replayed = scriptreplay(directory, "1-shell")  # the stock util-linux player, no conversion
    assert b"echo visible-$((40+2))" in replayed and b"visible-42" in replayed  # typed, then printed
    assert b"got-20" in replayed and b"40 120" in replayed

    cast = tmp_path / "shell.cast"
    exported = _recordings(
        recorded, "export", session_id, "--channel", "1", "--format", "asciicast", "-o", str(cast)
    )
    assert exported.returncode == 0, exported.stderr
    header, events = cast_events(cast)
    assert (header["version"], header["width"], header["height"]) == (2, 100, 30)
    assert ["r", "120x40"] in [e[1:] for e in events] and not any(e[1] == "i" for e in events)
    played = cast_text(cast)  # the stock asciinema parses and plays it
    assert "visible-42" in played and "got-20" in played and "40 120" in played

    for file in directory.iterdir():
        assert b"hunter2-not-recorded" not in file.read_bytes(), file.name
    doc = session_doc(directory)
    assert (doc["status"], doc["end_reason"], doc["user"]) == ("closed", "upstream", "alice@corp.com")
    assert doc["channels"][0]["kind"] == "shell" and doc["channels"][0]["size"] == [100, 30]
    for path in [directory.parent, directory, *directory.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path

    verified = _recordings(recorded, "verify", session_id)
    assert verified.returncode == 0 and b"the configured signing_key" in verified.stdout, verified
    out = directory / "1-shell.out"
    data = bytearray(out.read_bytes())
    data[-3] ^= 1
    out.write_bytes(bytes(data))
    tampered = _recordings(recorded, "verify", session_id)
    assert tampered.returncode == 1
    assert tampered.stdout == b"FAILED 1-shell.out: changed (sha256 differs from the manifest)\n"


def test_binary_exec_output_is_recorded_byte_exact(
    recorded: GatewayProcess, keys: Keys, tmp_path: Path
) -> None:
    alice = Client(recorded, keys.alice, tmp_path)
    before = _started(recorded)
    result = alice.ssh("alice+web-1", MAKE_BINARY, timeout=120)
    assert result.returncode == 0 and result.stdout == BINARY
    (directory,) = _new_sessions(recorded, before)
    assert payload(directory / "1-exec.out") == BINARY
    assert not (directory / "1-exec.err").exists()  # created only for stderr bytes
    cast = tmp_path / "binary.cast"
    assert _recordings(recorded, "export", directory.name, "-o", str(cast)).returncode == 0
    header, events = cast_events(cast)  # strict JSON, line by line
    assert header["command"] == MAKE_BINARY
    assert "".join(e[2] for e in events if e[1] == "o") == BINARY.decode("utf-8", "replace")
    assert verify(directory, None) == []


@pytest.mark.parametrize(
    "command",
    ["scp -f /dev/null </dev/null; echo hidden-$((6*7))", "rsync --server --sender . x; echo hidden-$((6*7))"],
)
def test_a_command_that_only_starts_like_a_transfer_keeps_its_output(
    recorded: GatewayProcess, keys: Keys, tmp_path: Path, command: str
) -> None:
    # Transfers are recorded as events, without their bytes: a line that runs more than scp or
    # rsync must not pass as one, or its output would go unrecorded.
    alice = Client(recorded, keys.alice, tmp_path)
    before = _started(recorded)
    result = alice.ssh("alice+web-1", command)
    assert b"hidden-42" in result.stdout
    (directory,) = _new_sessions(recorded, before)
    assert b"hidden-42" in payload(directory / "1-exec.out")
    assert not (directory / "1-exec.jsonl").exists()


def test_exec_stderr_scp_rsync_sftp_and_forward(
    recorded: GatewayProcess,
    keys: Keys,
    tmp_path: Path,
    remote_dir: Path,
) -> None:
    alice = Client(recorded, keys.alice, tmp_path)
    before = _started(recorded)
    assert alice.ssh("alice+web-1", "echo out-line; echo err-line >&2").returncode == 0
    local = tmp_path / "up.bin"
    local.write_bytes(b"y" * 70000)
    assert alice.scp("alice+web-1", str(local), f"gw:{remote_dir}/up.bin", legacy=True).returncode == 0
    assert alice.scp("alice+web-1", f"gw:{remote_dir}/nope", str(tmp_path / "x"), legacy=True).returncode == 1
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.txt").write_text("a")
    assert alice.rsync("alice+web-1", "-a", f"{tmp_path / 'tree'}/", f"gw:{remote_dir}/tree/").returncode == 0
    remote = f"{remote_dir}/sftp.bin"
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
    dirs = _new_sessions(recorded, before)
    assert len(dirs) == 6
    files = [(f.name, f) for d in dirs for f in d.iterdir()]  # names repeat: every session has channel 1
    plain = next(d for d in dirs if (d / "1-exec.timing").exists())
    assert payload(plain / "1-exec.out") == b"out-line\n" and payload(plain / "1-exec.err") == b"err-line\n"

    transfers = [lines(f) for name, f in files if name.endswith("-exec.jsonl")]
    rsync, scp_missing, scp_up = sorted(transfers, key=lambda ev: (ev[0]["protocol"], ev[0]["direction"]))
    assert sum(name.endswith("-exec.out") for name, _ in files) == 1  # no transfer_data: only the plain exec
    assert [(e["op"], e.get("file"), e.get("bytes"), e.get("status")) for e in scp_up[:2]] == [
        ("start", None, None, None), ("file", "up.bin", 70000, "ok"),
    ]  # fmt: skip
    assert (scp_up[2]["op"], scp_up[2]["status"], scp_up[2]["bytes"]) == ("end", "ok", scp_up[2]["bytes_in"])
    assert scp_up[2]["bytes"] > 70000  # the channel's bytes: the file and the protocol around it
    assert scp_up[0]["direction"] == "upload" and scp_up[0]["paths"] == [f"{remote_dir}/up.bin"]
    error = next(e for e in scp_missing if e["op"] == "error")
    assert scp_missing[0]["direction"] == "download" and "No such file" in error["message"]
    assert scp_missing[-1]["status"] == "error"
    assert (rsync[0]["protocol"], rsync[0]["direction"], rsync[-1]["status"]) == ("rsync", "upload", "ok")
    assert rsync[-1]["bytes"] > 0

    sftp_events = lines(next(f for name, f in files if name.endswith("-sftp.jsonl")))
    assert {"open", "close", "rename", "remove"} <= {e["op"] for e in sftp_events}
    closes = [e for e in sftp_events if e["op"] == "close" and e.get("bytes")]
    assert {"read": 0, "written": 70000} in [c["bytes"] for c in closes]
    forward = lines(next(f for name, f in files if name.endswith("-forward.jsonl")))
    (closed,) = [e for e in forward if e["op"] == "close"]
    assert (closed["bytes_in"], closed["bytes_out"]) == (3000, 3000)
    assert not any(name.endswith(("-forward.out", "-forward.in")) for name, _ in files)  # no forward_data


def test_search_finds_a_word_printed_in_one_session_only(
    recorded: GatewayProcess, keys: Keys, tmp_path: Path
) -> None:
    alice = Client(recorded, keys.alice, tmp_path)
    before = _started(recorded)
    assert alice.ssh("alice+web-1", "echo needle-$((6*7)) in a haystack").returncode == 0
    assert alice.ssh("alice+web-1", "echo only hay here").returncode == 0
    first, _ = _new_sessions(recorded, before)
    found = _recordings(recorded, "search", "needle-42")
    assert found.returncode == 0, found.stderr
    (line,) = found.stdout.decode().splitlines()
    session_id, user, resource, started, text = line.split("\t")
    assert (session_id, user, resource, text) == (
        first.name,
        "alice@corp.com",
        "web-1",
        "needle-42 in a haystack",
    )
    assert started == session_doc(first)["started"]


def test_kill_9_during_a_download_loses_at_most_the_last_second(
    keys: Keys, upstream: Upstream, tmp_path: Path
) -> None:
    config = base_config(keys, upstream)
    config["recording"] = {"dir": str(tmp_path / "recordings")}
    gw = GatewayProcess(tmp_path / "gw", config).start()
    alice = Client(gw, keys.alice, tmp_path / "alice")
    pattern = b"0123456789abcdef" * 4096
    client = subprocess.Popen(
        alice.ssh_argv("alice+web-1", "yes 0123456789abcdef | tr -d '\\n' | head -c 100M"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    received: list[tuple[float, int]] = []  # (time, bytes the client had), read at ~20 MB/s

    def reader() -> None:
        assert client.stdout is not None
        total = 0
        while chunk := client.stdout.read(65536):
            total += len(chunk)
            received.append((time.monotonic(), total))
            time.sleep(0.003)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while (not received or received[-1][1] < 30 << 20) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.process is not None
        killed_at = time.monotonic()
        gw.process.send_signal(signal.SIGKILL)
        gw.process.wait(timeout=10)
    finally:
        client.kill()
        thread.join(timeout=30)
        client.wait(timeout=10)
    (directory,) = (tmp_path / "recordings").glob("[0-9]*/*")
    assert session_doc(directory)["status"] == "active"
    recorded_bytes = payload(directory / "1-exec.out")
    a_second_before = max(n for t, n in received if t <= killed_at - 1.0)
    assert a_second_before > 10 << 20 and len(recorded_bytes) >= a_second_before
    assert len(recorded_bytes) < 100 << 20  # the download was cut, not finished
    assert recorded_bytes == (pattern * 1600)[: len(recorded_bytes)]  # an exact prefix
    gw.start()
    try:
        event = gw.wait_event("recording.interrupted")
        assert directory.name in event["sessions"]
        doc = session_doc(directory)
        assert (doc["status"], doc["end_reason"]) == ("interrupted", "error")
        assert verify(directory, None) == []
        assert b"0123456789abcdef" in scriptreplay(directory, "1-exec")[:4096]
    finally:
        gw.stop()
