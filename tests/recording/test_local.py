"""The recorder against a real directory: the layout of docs/recordings.md, read back with the
stock scriptreplay and asciinema, manifests, crashes and retention."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sshgate.recording.channels import Options
from sshgate.recording.local import FileRecorder
from sshgate.recording.manifest import load_signing_key, verify
from sshgate.recording.recorder import RecordingError
from sshgate.recording.retention import prune
from sshgate.sftp import SftpTracker
from sshgate.sftp import protocol as p
from tests.recording.helpers import META, lines, payload, scriptreplay, session_dir, session_doc
from tests.sftp import packets as k

PTY = {"command": None, "subsystem": None, "pty": True, "term": "xterm-256color", "size": [100, 30]}
EXEC = {"command": "uname -a", "subsystem": None, "pty": False, "term": None, "size": None}


def timing_lines(path: Path) -> list[list[str]]:
    return [line.split(" ", 3) for line in path.read_text().splitlines()]


def assert_private(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


async def test_shell_keeps_raw_output_timing_and_resizes_but_no_keystrokes(tmp_path: Path) -> None:
    os.umask(0o022)  # what a service usually runs with: files must still be private
    recorder = FileRecorder(tmp_path / "rec")
    await recorder.start()
    session = await recorder.start_session("s-shell", META)
    session.note_decision({"stage": "session", "action": "allow", "reason": "default"})
    chan = session.open_channel("shell", PTY)
    chan.output(b"$ ")
    chan.input(b"sudo true\r")
    chan.output(b"Password: ")
    chan.input(b"hunter2\r")
    await asyncio.sleep(0.02)
    chan.output(b"caf\xc3")  # a character split over two chunks, and two flushes
    await recorder.flush()
    chan.output(b"\xa9 \x1b[1mbold\x1b[0m\r\n", stderr=True)  # a terminal shows stderr with the rest
    chan.resize(120, 40)
    chan.close(0)
    await session.close("closed", end_reason="upstream")
    await recorder.aclose()

    directory = session_dir(tmp_path / "rec", "s-shell")
    assert sorted(path.name for path in directory.iterdir()) == [
        "1-shell.out",
        "1-shell.timing",
        "session.json",
    ]
    written = b"$ Password: caf\xc3\xa9 \x1b[1mbold\x1b[0m\r\n"
    assert payload(directory / "1-shell.out") == written
    steps = timing_lines(directory / "1-shell.timing")
    headers = {s[2]: s[3] for s in steps if s[0] == "H"}
    assert headers["TERM"] == "xterm-256color" and (headers["COLUMNS"], headers["LINES"]) == ("100", "30")
    assert headers["OUTPUT_LOG"] == "1-shell.out" and headers["EXIT_CODE"] == "0"
    assert sum(int(s[2]) for s in steps if s[0] == "O") == len(written)
    assert [s[2:] for s in steps if s[0] == "S"] == [["SIGWINCH", "ROWS=40 COLS=120"]]
    assert scriptreplay(directory, "1-shell") == written + b"\n"  # scriptreplay ends with a newline
    for path in directory.iterdir():
        assert b"hunter2" not in path.read_bytes()

    doc = session_doc(directory)
    assert (doc["id"], doc["status"], doc["end_reason"]) == ("s-shell", "closed", "upstream")
    assert doc["user"] == "alice@corp.com" and doc["identity"] == "idp:formal:human:alice@corp.com"
    assert (doc["resource"], doc["native_user"], doc["client_ip"]) == ("web-1", "ubuntu", "127.0.0.1")
    assert doc["started"] and doc["ended"] and doc["decisions"][0]["action"] == "allow"
    (channel,) = doc["channels"]
    assert (channel["n"], channel["kind"], channel["pty"], channel["exit_status"]) == (1, "shell", True, 0)
    assert channel["files"] == ["1-shell.out", "1-shell.timing"]
    assert channel["bytes_in"] == len(b"sudo true\rhunter2\r") and channel["bytes_out"] == len(written)
    assert set(doc["files"]) == {"1-shell.out", "1-shell.timing"} and "signature" not in doc
    assert doc["files"]["1-shell.out"]["size"] == (directory / "1-shell.out").stat().st_size
    assert not list((tmp_path / "rec" / ".active").iterdir())
    assert_private(tmp_path / "rec")


async def test_capture_input_keeps_keystrokes_in_order(tmp_path: Path) -> None:
    recorder = FileRecorder(tmp_path, Options(capture_input=True))
    session = await recorder.start_session("s-input", META)
    chan = session.open_channel("shell", PTY)
    chan.input(b"ls\r")
    await asyncio.sleep(0.01)
    chan.output(b"ls\r\n")
    await session.close()
    await recorder.aclose()
    directory = session_dir(tmp_path, "s-input")
    assert payload(directory / "1-shell.in") == b"ls\r"
    assert [s[0] for s in timing_lines(directory / "1-shell.timing") if s[0] != "H"] == ["I", "O"]
    typed = subprocess.run(
        ["scriptreplay", "-T", str(directory / "1-shell.timing"), "-I", str(directory / "1-shell.in"),
         "-O", str(directory / "1-shell.out"), "-x", "in", "-d", "1000"],
        capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    assert typed.stdout.startswith(b"ls")


async def test_small_chunks_arriving_together_share_timing_lines(tmp_path: Path) -> None:
    recorder = FileRecorder(tmp_path)
    session = await recorder.start_session("s-chunks", META)
    chan = session.open_channel("shell", PTY)
    for i in range(1000):
        chan.output(b"%04d\r\n" % i)
    await session.close()
    await recorder.aclose()
    directory = session_dir(tmp_path, "s-chunks")
    assert payload(directory / "1-shell.out") == b"".join(b"%04d\r\n" % i for i in range(1000))
    data_lines = [s for s in timing_lines(directory / "1-shell.timing") if s[0] == "O"]
    assert sum(int(s[2]) for s in data_lines) == 6000
    assert len(data_lines) < 100  # 1000 writes in a few ms: merged, unless the test was descheduled a lot


async def test_exec_transfer_sftp_and_forward_files(tmp_path: Path) -> None:
    recorder = FileRecorder(tmp_path)
    session = await recorder.start_session("s-mixed", META)
    plain = session.open_channel("exec", {**EXEC, "command": "uname -a\nid"})
    plain.output(b"Linux box\n")
    plain.output(b"warning\n", stderr=True)
    plain.input(b"not kept without capture_input")
    plain.close(0)
    scp = session.open_channel("exec", {**EXEC, "command": "scp -v -p -t -- /srv/in"})
    scp.input(b"C0644 5 f\n")
    scp.output(b"\x00")
    scp.input(b"hello\x00")
    scp.output(b"\x00")
    scp.close(0)
    sftp = session.open_channel("sftp", {"command": None, "subsystem": "sftp", "pty": False})
    tracker = SftpTracker(sftp.event)
    tracker.client_data(k.open_(1, "/srv/a", p.FXF_WRITE | p.FXF_CREAT))
    tracker.server_data(k.handle(1, b"h"))  # a client names a handle only once it has it
    tracker.client_data(k.write(2, b"h", 0, b"12345") + k.close(3, b"h") + k.path_op(p.REMOVE, 4, "/srv/b"))
    tracker.server_data(k.status(2) + k.status(3) + k.status(4, 3, "denied"))
    sftp.close(0)
    forward = session.open_channel("forward", {"host": "127.0.0.1", "port": 5432})
    forward.input(b"q" * 10)
    forward.output(b"r" * 25)
    forward.close()
    rsync = session.open_channel(
        "exec", {**EXEC, "command": "rsync --server --sender -vlogDtpre.iLsfxCIvu . src/"}
    )
    rsync.output(b"x" * 7)
    await session.close()
    await recorder.aclose()

    directory = session_dir(tmp_path, "s-mixed")
    assert sorted(path.name for path in directory.iterdir()) == [
        "1-exec.err", "1-exec.out", "1-exec.timing", "2-exec.jsonl", "3-sftp.jsonl", "4-forward.jsonl",
        "5-exec.jsonl", "session.json",
    ]  # fmt: skip
    assert payload(directory / "1-exec.out") == b"Linux box\n"
    assert payload(directory / "1-exec.err") == b"warning\n"
    steps = timing_lines(directory / "1-exec.timing")
    assert ["H", "0.000000", "COMMAND", "uname -a\\x0aid"] in steps  # one line, whatever the command
    assert [s[2:] for s in steps if s[0] == "S"] == [["STDERR", "BYTES=8"]]
    assert scriptreplay(directory, "1-exec") == b"Linux box\n\n"  # stdout only, stderr skipped
    start, file, end = lines(directory / "2-exec.jsonl")
    assert (start["op"], start["protocol"], start["direction"], start["paths"]) == (
        "start",
        "scp",
        "upload",
        ["/srv/in"],
    )
    assert (file["op"], file["file"], file["bytes"], file["status"]) == ("file", "f", 5, "ok")
    assert (end["op"], end["bytes"], end["bytes_in"], end["bytes_out"], end["status"]) == (
        "end",
        16,
        16,
        2,
        "ok",
    )
    ops = lines(directory / "3-sftp.jsonl")
    assert [(e["op"], e["path"], e["status"]) for e in ops] == [
        ("open", "/srv/a", "ok"), ("close", "/srv/a", "ok"), ("remove", "/srv/b", "permission_denied"),
    ]  # fmt: skip
    assert ops[1]["bytes"] == {"read": 0, "written": 5} and all(e["t"] >= 0 for e in ops)
    opened, closed = lines(directory / "4-forward.jsonl")
    assert (opened["op"], opened["host"], opened["port"]) == ("open", "127.0.0.1", 5432)
    assert (closed["op"], closed["bytes_in"], closed["bytes_out"]) == ("close", 10, 25)
    start, end = lines(directory / "5-exec.jsonl")  # closed by the session's end
    assert (start["protocol"], start["direction"], start["paths"]) == ("rsync", "download", ["src/"])
    assert (end["bytes"], end["exit_status"], end["status"]) == (7, None, "error")
    doc = session_doc(directory)
    assert [(c["kind"], c["files"]) for c in doc["channels"]] == [
        ("exec", ["1-exec.out", "1-exec.err", "1-exec.timing"]), ("exec", ["2-exec.jsonl"]),
        ("sftp", ["3-sftp.jsonl"]), ("forward", ["4-forward.jsonl"]), ("exec", ["5-exec.jsonl"]),
    ]  # fmt: skip
    assert verify(directory, None) == []


async def test_transfer_and_forward_data_only_when_asked(tmp_path: Path) -> None:
    recorder = FileRecorder(tmp_path, Options(forward_data=True, transfer_data=True))
    session = await recorder.start_session("s-data", META)
    scp = session.open_channel("exec", {**EXEC, "command": "scp -f /etc/motd"})
    scp.input(b"\x00")
    scp.output(b"C0644 3 motd\n")
    scp.input(b"\x00")
    scp.output(b"hi\n\x00")
    scp.input(b"\x00")
    scp.close(0)
    forward = session.open_channel("forward", {"host": "db", "port": 5432})
    forward.input(b"query")
    forward.output(b"rows")
    forward.close()
    await session.close()
    await recorder.aclose()
    directory = session_dir(tmp_path, "s-data")
    assert payload(directory / "1-exec.out") == b"C0644 3 motd\nhi\n\x00"
    assert payload(directory / "1-exec.in") == b"\x00\x00\x00"
    assert [e["op"] for e in lines(directory / "1-exec.jsonl")] == ["start", "file", "end"]
    assert lines(directory / "1-exec.jsonl")[1]["direction"] == "download"
    assert (directory / "2-forward.out").read_bytes() == b"rows"  # raw: no timing, no header
    assert (directory / "2-forward.in").read_bytes() == b"query"


@pytest.mark.parametrize("transfer_data", [False, True])
async def test_a_channel_says_whether_it_keeps_its_output(tmp_path: Path, transfer_data: bool) -> None:
    """The gateway shows live viewers only output the recording keeps (gateway/channels.py)."""
    recorder = FileRecorder(tmp_path, Options(transfer_data=transfer_data))
    session = await recorder.start_session("s-keeps", META)
    channels = [
        session.open_channel("shell", PTY), session.open_channel("exec", EXEC),
        session.open_channel("exec", {**EXEC, "command": "scp -f /etc/motd"}),
        session.open_channel("exec", {**EXEC, "command": "rsync --server --sender -e.LsfxC . src/"}),
        session.open_channel("sftp", {**EXEC, "command": None, "subsystem": "sftp"}),
        session.open_channel("forward", {"host": "db", "port": 5432}),
    ]  # fmt: skip
    await session.close()
    await recorder.aclose()
    assert [c.keeps_output for c in channels] == [True, True, transfer_data, transfer_data, False, False]


async def test_written_within_a_second_while_the_session_runs(tmp_path: Path) -> None:
    recorder = FileRecorder(tmp_path)
    session = await recorder.start_session("s-live", META)
    chan = session.open_channel("shell", PTY)
    chan.output(b"still running\r\n")
    out = session_dir(tmp_path, "s-live") / "1-shell.out"
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and b"still running" not in (out.read_bytes() if out.exists() else b""):
        await asyncio.sleep(0.05)
    assert payload(out) == b"still running\r\n"
    doc = session_doc(out.parent)
    assert doc["status"] == "active" and doc["end_reason"] is None and doc["channels"][0]["closed_at"] is None
    await session.close("aborted", end_reason="client")
    await recorder.aclose()
    assert session_doc(out.parent)["status"] == "aborted"


async def test_unwritable_directory_refuses_the_session(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(RecordingError):
        await FileRecorder(tmp_path / "file").start_session("s-1", META)
    recorder = FileRecorder(tmp_path / "ok")
    for bad in ("../escape", "*", ""):
        with pytest.raises(RecordingError, match="session id"):
            await recorder.start_session(bad, META)
    await recorder.aclose()


def ssh_key(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    return key


def key_file(tmp_path: Path) -> str:
    path = tmp_path / "signing_key"
    ssh_key(path)
    return str(path)


async def test_signed_manifest_verifies_then_names_a_changed_file(tmp_path: Path) -> None:
    key = load_signing_key(key_file(tmp_path))
    recorder = FileRecorder(tmp_path / "rec", signing_key=key)
    session = await recorder.start_session("s-signed", META)
    chan = session.open_channel("shell", PTY)
    chan.output(b"signed output\r\n")
    await session.close()
    await recorder.aclose()
    directory = session_dir(tmp_path / "rec", "s-signed")
    doc = session_doc(directory)
    assert doc["signature"]["algorithm"] == "ed25519" and len(doc["files"]["1-shell.out"]["sha256"]) == 64
    public = key.public_key()
    assert verify(directory, public) == []

    out = directory / "1-shell.out"
    data = bytearray(out.read_bytes())
    data[-5] ^= 0x01
    out.write_bytes(bytes(data))
    assert verify(directory, public) == ["1-shell.out: changed (sha256 differs from the manifest)"]

    data[-5] ^= 0x01
    out.write_bytes(bytes(data))
    doc["native_user"] = "root"
    (directory / "session.json").write_text(json.dumps(doc))
    assert verify(directory, public) == ["session.json: changed (signature does not match)"]
    other = Ed25519PrivateKey.generate().public_key()
    assert "session.json: signed by another key" in verify(directory, other)[0]
    doc["files"]["../../etc/passwd"] = {"sha256": "0", "size": 0}
    doc["signature"]["public_key"] = "nonsense"
    (directory / "session.json").write_text(json.dumps(doc))
    problems = verify(directory, None)
    assert "../../etc/passwd: not a recording file name" in problems
    assert "session.json: malformed signature" in problems


def test_pem_and_wrong_signing_keys(tmp_path: Path) -> None:
    pem = tmp_path / "pem"
    pem.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    assert isinstance(load_signing_key(str(pem)), Ed25519PrivateKey)
    (tmp_path / "junk").write_text("nope")
    with pytest.raises(RecordingError, match="not a usable private key"):
        load_signing_key(str(tmp_path / "junk"))
    with pytest.raises(RecordingError, match="cannot read"):
        load_signing_key(str(tmp_path / "missing"))


CRASHER = """
import asyncio, sys
from pathlib import Path
from sshgate.recording.local import FileRecorder
from tests.recording.helpers import META

async def main():
    recorder = FileRecorder(Path(sys.argv[1]))
    session = await recorder.start_session("s-crash", META)
    chan = session.open_channel("shell", {"pty": True, "term": "xterm", "size": [80, 24]})
    chan.output(b"before the crash\\r\\n")
    await asyncio.sleep(1.2)
    print("flushed", flush=True)
    chan.output(b"never flushed\\r\\n")
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_kill_9_leaves_readable_files_and_the_next_start_marks_them_interrupted(tmp_path: Path) -> None:
    key = load_signing_key(key_file(tmp_path))
    root = tmp_path / "rec"
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHER, str(root)], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"flushed\n"
        live = FileRecorder(root)
        assert await live.start() == []  # the session's process is alive: not touched
        await live.aclose()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    directory = session_dir(root, "s-crash")
    assert session_doc(directory)["status"] == "active"
    assert scriptreplay(directory, "1-shell").startswith(b"before the crash\r\n")

    recorder = FileRecorder(root, signing_key=key)
    assert await recorder.start() == ["s-crash"]
    await recorder.aclose()
    doc = session_doc(directory)
    assert (doc["status"], doc["end_reason"]) == ("interrupted", "error") and "1-shell.out" in doc["files"]
    assert verify(directory, key.public_key()) == []
    assert await FileRecorder(root).start() == []  # only once


async def test_retention_deletes_sessions_that_ended_long_ago(tmp_path: Path) -> None:
    first = FileRecorder(tmp_path)
    for sid in ("s-old", "s-active", "s-new"):
        await (await first.start_session(sid, META)).close()
    await first.aclose()
    today = session_dir(tmp_path, "s-new").parent
    old_day = tmp_path / "2020-01-01"
    old_day.mkdir()
    for name, status in (("s-old", "closed"), ("s-active", "active")):
        doc = session_doc(session_dir(tmp_path, name))
        session_dir(tmp_path, name).rename(old_day / name)
        (old_day / name / "session.json").write_text(json.dumps({**doc, "status": status, "ended": None}))
    now = datetime.datetime.now(datetime.UTC)
    assert prune(tmp_path, 30, now + datetime.timedelta(days=10_000)) == ["s-old", "s-new"]
    assert sorted(p.name for p in old_day.iterdir()) == ["s-active"] and not today.exists()

    doc = session_doc(old_day / "s-active")
    closed = {**doc, "status": "closed", "ended": "2020-01-01T10:00:00Z"}
    (old_day / "s-active" / "session.json").write_text(json.dumps(closed))
    recorder = FileRecorder(tmp_path, retention_days=30, flush_interval=0.05)
    await recorder.start()
    deadline = time.monotonic() + 5
    while (old_day / "s-active").exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await recorder.aclose()
    assert not old_day.exists()


def _open_under(directory: Path) -> list[str]:
    """This process's descriptors that point into ``directory``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            found.append(target)
    return found


async def test_a_bulk_channel_holds_its_files_open_only_until_it_ends(tmp_path: Path) -> None:
    """Large flushes keep their file open between writes (files.RecordFile); the channel's end
    closes it, and the bytes and manifest are whole."""
    recorder = FileRecorder(tmp_path / "rec")
    await recorder.start()
    session = await recorder.start_session("s-bulk", META)
    chan = session.open_channel("exec", EXEC)
    chunk = os.urandom(32768)
    for _ in range(64):  # 2 MiB: above the direct-write threshold in one flush
        chan.output(chunk)
    await recorder.flush()
    assert any(p.endswith("1-exec.out") for p in _open_under(tmp_path / "rec"))
    for _ in range(64):  # the last flush is a direct one too: only the channel's end closes the file
        chan.output(chunk)
    chan.output(b"tail")
    chan.close(0)
    await session.close()
    await recorder.aclose()
    assert _open_under(tmp_path / "rec") == []
    directory = session_dir(tmp_path / "rec", "s-bulk")
    assert (directory / "1-exec.out").read_bytes().split(b"\n", 1)[1] == chunk * 128 + b"tail"
    assert verify(directory, None) == []
