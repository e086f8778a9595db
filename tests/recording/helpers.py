"""Shared bits of the recording tests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sshgate.recording.local import write_json
from sshgate.recording.manifest import load_signing_key, seal

ASCIINEMA = str(Path(sys.executable).parent / "asciinema")

META: dict[str, Any] = {
    "user": {
        "type": "human",
        "email": "alice@corp.com",
        "provider": "formal",
        "login": "alice",
        "groups": ["dev"],
    },
    "resource": "web-1",
    "resource_type": "ssh",
    "native_user": "ubuntu",
    "client_ip": "127.0.0.1",
    "client_version": "SSH-2.0-OpenSSH_9.2",
    "auth_method": "publickey",
}


def session_dir(root: Path, session_id: str) -> Path:
    (found,) = root.glob(f"[0-9]*/{session_id}")
    return found


def session_doc(directory: Path) -> dict[str, Any]:
    return dict(json.loads((directory / "session.json").read_text()))


def closed_sessions(root: Path, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    """The documents of the ended sessions under ``root``, once ``count`` have ended."""
    deadline = time.monotonic() + timeout
    while True:
        docs = [json.loads(p.read_text()) for p in root.glob("[0-9]*/*/session.json")]
        ended = [d for d in docs if d.get("status") != "active"]
        if len(ended) >= count or time.monotonic() > deadline:
            return ended
        time.sleep(0.1)


def payload(path: Path) -> bytes:
    """A data log's bytes after its first line (script's header, which scriptreplay skips)."""
    head, _, rest = path.read_bytes().partition(b"\n")
    assert head.startswith(b"Script started on "), head
    return rest


def scriptreplay(directory: Path, stem: str, *extra: str) -> bytes:
    """What the stock util-linux scriptreplay prints for a channel, 1000 times faster."""
    argv = ["scriptreplay", "--log-timing", str(directory / f"{stem}.timing"),
            "--log-out", str(directory / f"{stem}.out"), "--divisor", "1000", *extra]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, timeout=60, check=True)
    return done.stdout


def cast_text(path: Path) -> str:
    """What the real asciinema player prints for a cast (it fails on a malformed one)."""
    done = subprocess.run([ASCIINEMA, "cat", str(path)], capture_output=True, timeout=60, check=True)
    return done.stdout.decode()


def cast_events(path: Path) -> tuple[dict[str, Any], list[list[Any]]]:
    """A cast's header and events, each line parsed as strict JSON."""
    header, *events = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
    return header, events


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def cli(*argv: str) -> subprocess.CompletedProcess[bytes]:
    """``sshgate recordings ...`` as a process."""
    command = [sys.executable, "-m", "sshgate.cli", "recordings", *argv]
    return subprocess.run(command, capture_output=True, timeout=120)


def legacy_session(root: Path, key: str) -> Path:
    """A recording as the asciicast recorder wrote it before the raw layout (session.json v1)."""
    directory = root / "2026-11-30" / "s-legacy"
    directory.mkdir(parents=True)
    cast = [
        {"version": 2, "width": 100, "height": 30, "timestamp": 1796000000, "title": "alice@corp.com on web-1 as ubuntu",
         "env": {"TERM": "xterm"}},
        [0.01, "o", "$ echo caf\u00e9\r\n"],
        [0.5, "r", "120x40"],
        [0.6, "o", "legacy-word \u001b[1mbold\u001b[0m\r\n"],
    ]  # fmt: skip
    (directory / "1-shell.cast").write_text("".join(json.dumps(line) + "\n" for line in cast))
    doc = {
        "version": 1, "session_id": "s-legacy", "status": "closed", "started_at": "2026-11-30T10:00:00Z",
        "ended_at": "2026-11-30T10:01:00Z",
        "user": {"type": "human", "email": "alice@corp.com", "provider": "formal", "login": "alice", "groups": ["dev"]},
        "resource": "web-1", "resource_type": "ssh", "native_user": "ubuntu",
        "client": {"ip": "127.0.0.1", "version": "SSH-2.0-OpenSSH_9.2"}, "auth_method": "publickey",
        "decisions": [{"stage": "session", "action": "allow"}],
        "channels": [{"n": 1, "kind": "shell", "file": "1-shell.cast", "pty": True, "term": "xterm",
                      "size": [100, 30], "opened_at": "2026-11-30T10:00:00Z", "closed_at": "2026-11-30T10:01:00Z",
                      "exit_status": 0, "exit_signal": None, "bytes_in": 10, "bytes_out": 40}],
    }  # fmt: skip
    seal(doc, directory, load_signing_key(key))
    write_json(directory / "session.json", doc)
    return directory
