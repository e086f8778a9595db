"""Shared bits of the recording tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ASCIINEMA = str(Path(sys.executable).parent / "asciinema")

META: dict[str, Any] = {
    "user": {
        "type": "user",
        "email": "alice@corp.com",
        "provider": "local",
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


def cast_text(path: Path) -> str:
    """What the real asciinema player prints for a cast (it fails on a malformed one)."""
    done = subprocess.run([ASCIINEMA, "cat", str(path)], capture_output=True, timeout=30, check=True)
    return done.stdout.decode()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
