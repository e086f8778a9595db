from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from structlog.testing import capture_logs

from sshgate.recording.local import FileRecorder
from sshgate.recording.manifest import load_signing_key, verify
from sshgate.recording.recorder import RecordingError
from sshgate.sftp import SftpTracker
from sshgate.sftp import protocol as p
from tests.recording.helpers import META, cast_text, lines, session_dir, session_doc
from tests.sftp import packets as k

PTY = {"command": None, "subsystem": None, "pty": True, "term": "xterm-256color", "size": [100, 30]}


async def test_shell_cast_has_output_and_resizes_but_no_keystrokes(tmp_path: Path) -> None:
    recorder = FileRecorder(tmp_path)
    await recorder.start()
    session = await recorder.start_session("s-shell", META)
    session.note_decision({"stage": "session", "action": "allow", "reason": "default"})
    chan = session.open_channel("shell", PTY)
    chan.output(b"$ ")
    chan.input(b"sudo true\r")
    chan.output(b"Password: ")
    chan.input(b"hunter2\r")
    chan.output(b"caf\xc3")  # a character split over two chunks, and two writer requests
    await recorder.flush()
    chan.output(b"\xa9 \x1b[1mbold\x1b[0m\r\n", stderr=True)
    chan.resize(120, 40)
    chan.close(0)
    await session.close("closed")
    await recorder.aclose()

    directory = session_dir(tmp_path, "s-shell")
    cast = directory / "1-shell.cast"
    header, *events = (json.loads(line) for line in cast.read_text().splitlines())
    assert header["version"] == 2 and (header["width"], header["height"]) == (100, 30)
    assert header["env"] == {"TERM": "xterm-256color"} and "alice@corp.com" in header["title"]
    assert isinstance(header["timestamp"], int) and "command" not in header
    assert [e[1] for e in events][-1] == "r" and {e[1] for e in events} == {"o", "r"}
    output = [e[2] for e in events if e[1] == "o"]
    assert "".join(output) == "$ Password: café \x1b[1mbold\x1b[0m\r\n"
    assert events[-1][2] == "120x40" and any(text.startswith("é") for text in output)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(events))
    assert "café \x1b[1mbold" in cast_text(cast)
    for path in directory.iterdir():
        assert b"hunter2" not in path.read_bytes()

    doc = session_doc(directory)
    assert doc["status"] == "closed" and doc["ended_at"]
    assert doc["user"]["email"] == "alice@corp.com" and doc["native_user"] == "ubuntu"
    assert doc["client"] == {"ip": "127.0.0.1", "version": "SSH-2.0-OpenSSH_9.2"}
    assert doc["auth_method"] == "publickey" and doc["decisions"][0]["action"] == "allow"
    (channel,) = doc["channels"]
    assert channel["kind"] == "shell" and channel["pty"] is True and channel["exit_status"] == 0
    assert channel["bytes_in"] == len(b"sudo true\rhunter2\r")
    assert channel["bytes_out"] == len(b"$ Password: caf\xc3\xa9 \x1b[1mbold\x1b[0m\r\n")
    assert set(doc["files"]) == {"1-shell.cast"} and "signature" not in doc
    assert not list((tmp_path / ".active").iterdir())


async def test_capture_input_records_keystrokes(tmp_path: Path) -> None:
    recorder = FileRecorder(tmp_path, capture_input=True)
    session = await recorder.start_session("s-input", META)
    chan = session.open_channel("shell", PTY)
    chan.input(b"ls\r")
    chan.output(b"ls\r\n")
    await session.close()
    await recorder.aclose()
    _, *events = lines(session_dir(tmp_path, "s-input") / "1-shell.cast")
    assert [e[1:] for e in events] == [["i", "ls\r"], ["o", "ls\r\n"]]


async def test_small_chunks_arriving_together_become_few_events(tmp_path: Path) -> None:
    recorder = FileRecorder(tmp_path)
    session = await recorder.start_session("s-chunks", META)
    chan = session.open_channel("shell", PTY)
    for i in range(1000):
        chan.output(b"%04d\r\n" % i)
    await session.close()
    await recorder.aclose()
    _, *events = lines(session_dir(tmp_path, "s-chunks") / "1-shell.cast")
    assert "".join(e[2] for e in events) == "".join(f"{i:04d}\r\n" for i in range(1000))
    assert len(events) < 100  # 1000 writes in a few ms: merged, unless the test was descheduled a lot


async def test_exec_cast_transfer_sftp_and_forward_files(tmp_path: Path) -> None:
    recorder = FileRecorder(tmp_path)
    session = await recorder.start_session("s-mixed", META)
    exec_meta = {"command": "uname -a", "subsystem": None, "pty": False, "term": None, "size": None}
    plain = session.open_channel("exec", exec_meta)
    plain.output(b"Linux box\n")
    plain.output(b"warning\n", stderr=True)
    plain.close(0)
    scp = session.open_channel("exec", {**exec_meta, "command": "scp -v -p -t -- /srv/in"})
    scp.input(b"C0644 5 f\nhello\x00")
    scp.output(b"\x00\x00\x00")
    scp.close(0)
    sftp = session.open_channel("sftp", {"command": None, "subsystem": "sftp", "pty": False})
    tracker = SftpTracker(sftp.event)  # type: ignore[attr-defined]
    tracker.client_data(k.open_(1, "/srv/a", p.FXF_WRITE | p.FXF_CREAT) + k.write(2, b"h", 0, b"12345"))
    tracker.server_data(k.handle(1, b"h") + k.status(2))
    tracker.client_data(k.close(3, b"h") + k.path_op(p.REMOVE, 4, "/srv/b"))
    tracker.server_data(k.status(3) + k.status(4, 3, "denied"))
    sftp.close(0)
    forward = session.open_channel("forward", {"host": "127.0.0.1", "port": 5432})
    forward.input(b"q" * 10)
    forward.output(b"r" * 25)
    forward.close()
    rsync = session.open_channel(
        "exec", {**exec_meta, "command": "rsync --server --sender -vlogDtpre.iLsfxCIvu . src/"}
    )
    rsync.output(b"x" * 7)
    await session.close()
    await recorder.aclose()

    directory = session_dir(tmp_path, "s-mixed")
    assert sorted(path.name for path in directory.iterdir()) == [
        "1-exec.cast", "2-exec.jsonl", "3-sftp.jsonl", "4-forward.jsonl", "5-exec.jsonl", "session.json",
    ]  # fmt: skip
    header = lines(directory / "1-exec.cast")[0]
    assert header["command"] == "uname -a" and (header["width"], header["height"]) == (80, 24)
    assert cast_text(directory / "1-exec.cast") == "Linux box\nwarning\n"
    start, end = lines(directory / "2-exec.jsonl")
    assert start["op"] == "start" and start["protocol"] == "scp" and start["direction"] == "upload"
    assert start["paths"] == ["/srv/in"]
    assert (end["op"], end["bytes_in"], end["bytes_out"], end["exit_status"]) == ("end", 16, 3, 0)
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
    assert end["bytes_out"] == 7 and end["exit_status"] is None
    kinds = [(c["kind"], c["file"]) for c in session_doc(directory)["channels"]]
    assert kinds[2:4] == [("sftp", "3-sftp.jsonl"), ("forward", "4-forward.jsonl")]


async def test_written_within_a_second_while_the_session_runs(tmp_path: Path) -> None:
    recorder = FileRecorder(tmp_path)
    session = await recorder.start_session("s-live", META)
    chan = session.open_channel("shell", PTY)
    chan.output(b"still running\r\n")
    cast = session_dir(tmp_path, "s-live") / "1-shell.cast"
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and b"still running" not in (
        cast.read_bytes() if cast.exists() else b""
    ):
        await asyncio.sleep(0.05)
    assert "still running" in cast_text(cast)
    doc = session_doc(cast.parent)
    assert doc["status"] == "active" and doc["channels"][0]["closed_at"] is None
    await session.close()
    await recorder.aclose()


def writer_pids() -> list[int]:
    """This process's recording writer processes."""
    children = [
        int(c) for t in Path("/proc/self/task").iterdir() for c in (t / "children").read_text().split()
    ]
    return [
        pid for pid in children if b"sshgate.recording.writer" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


async def test_a_dead_writer_process_is_reported_and_replaced_without_losing_output(tmp_path: Path) -> None:
    recorder = FileRecorder(tmp_path)
    session = await recorder.start_session("s-writer", META)
    chan = session.open_channel("shell", PTY)
    chan.output(b"before\r\n")
    await recorder.flush()
    (pid,) = writer_pids()
    os.kill(pid, signal.SIGKILL)
    chan.output(b"after\r\n")
    with capture_logs() as logs:
        await session.close()
    await recorder.aclose()
    assert [e["event"] for e in logs] == ["recording.writer_restarted"] and logs[0]["retried"]
    directory = session_dir(tmp_path, "s-writer")
    assert cast_text(directory / "1-shell.cast") == "before\r\nafter\r\n"
    assert verify(directory, None) == []
    assert writer_pids() == []


async def test_unwritable_directory_refuses_the_session(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(RecordingError):
        await FileRecorder(tmp_path / "file").start_session("s-1", META)
    recorder = FileRecorder(tmp_path / "ok")
    with pytest.raises(RecordingError, match="session id"):
        await recorder.start_session("../escape", META)
    await recorder.aclose()


def ssh_key(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    return key


async def test_signed_manifest_verifies_then_names_a_changed_file(tmp_path: Path) -> None:
    key = load_signing_key(_key_file(tmp_path))
    recorder = FileRecorder(tmp_path / "rec", signing_key=key)
    session = await recorder.start_session("s-signed", META)
    chan = session.open_channel("shell", PTY)
    chan.output(b"signed output\r\n")
    await session.close()
    await recorder.aclose()
    directory = session_dir(tmp_path / "rec", "s-signed")
    doc = session_doc(directory)
    assert doc["signature"]["algorithm"] == "ed25519" and len(doc["files"]["1-shell.cast"]["sha256"]) == 64
    public = key.public_key()
    assert verify(directory, public) == []

    cast = directory / "1-shell.cast"
    data = bytearray(cast.read_bytes())
    data[-5] ^= 0x01
    cast.write_bytes(bytes(data))
    assert verify(directory, public) == ["1-shell.cast: changed (sha256 differs from the manifest)"]

    cast.write_bytes(bytes(data[:-5]) + bytes([data[-5] ^ 0x01]) + bytes(data[-4:]))
    doc["native_user"] = "root"
    (directory / "session.json").write_text(json.dumps(doc))
    assert verify(directory, public) == ["session.json: changed (signature does not match)"]
    other = Ed25519PrivateKey.generate().public_key()
    assert "session.json: signed by another key" in verify(directory, other)[0]


def _key_file(tmp_path: Path) -> str:
    path = tmp_path / "signing_key"
    ssh_key(path)
    return str(path)


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


async def test_kill_9_leaves_a_readable_cast_and_the_next_start_marks_it_interrupted(tmp_path: Path) -> None:
    key = load_signing_key(_key_file(tmp_path))
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
    assert "before the crash" in cast_text(directory / "1-shell.cast")

    recorder = FileRecorder(root, signing_key=key)
    assert await recorder.start() == ["s-crash"]
    await recorder.aclose()
    doc = session_doc(directory)
    assert doc["status"] == "interrupted" and "1-shell.cast" in doc["files"]
    assert verify(directory, key.public_key()) == []
    assert await FileRecorder(root).start() == []  # only once
