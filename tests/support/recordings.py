"""Fake recorded sessions in the layout of docs/recordings.md, many and fast: for catalog tests
and bench/bench_catalog.py. Each is a version 2 session.json with a sealed manifest and, when
asked, one shell channel whose output is given bytes (raw .out plus a script timing log)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sshgate.recording import timing
from sshgate.recording.manifest import seal

USERS = ("alice@corp.com", "bob@corp.com", "carol@corp.com")
PROVIDERS = ("formal", "google")
RESOURCES = ("web-1", "web-2", "db-1", "bastion")
NATIVE_USERS = ("ubuntu", "root")
START = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
STEP = datetime.timedelta(seconds=97)


@dataclass(frozen=True, slots=True)
class Fake:
    """What session ``i`` is: deterministic, so tests can compute what a query must return."""

    i: int

    @property
    def id(self) -> str:
        return f"s-{self.i:06d}"

    @property
    def started(self) -> datetime.datetime:
        return START + STEP * self.i

    @property
    def user(self) -> str:
        return USERS[self.i % len(USERS)]

    @property
    def provider(self) -> str:
        return PROVIDERS[self.i % len(PROVIDERS)]

    @property
    def resource(self) -> str:
        return RESOURCES[self.i % len(RESOURCES)]

    @property
    def native_user(self) -> str:
        return NATIVE_USERS[self.i % len(NATIVE_USERS)]

    @property
    def status(self) -> str:
        return "active" if self.i % 50 == 49 else "closed"

    @property
    def day(self) -> str:
        return self.started.strftime("%Y-%m-%d")


def stamp(value: datetime.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def document(fake: Fake, files: list[str]) -> dict[str, Any]:
    ended = None if fake.status == "active" else stamp(fake.started + datetime.timedelta(seconds=60))
    channels = []
    if files:
        channels.append({"n": 1, "kind": "shell", "files": files, "pty": True, "term": "xterm",
                         "size": [80, 24], "opened_at": stamp(fake.started), "closed_at": ended,
                         "exit_status": 0, "exit_signal": None, "bytes_in": 0, "bytes_out": 0})  # fmt: skip
    return {
        "version": 2, "id": fake.id, "status": fake.status,
        "end_reason": None if fake.status == "active" else "client",
        "started": stamp(fake.started), "ended": ended,
        "user": fake.user, "identity": f"idp:{fake.provider}:human:{fake.user}", "identity_type": "human",
        "login": fake.user.split("@")[0], "groups": ["dev"],
        "resource": fake.resource, "resource_type": "ssh", "native_user": fake.native_user,
        "client_ip": f"10.0.{fake.i // 256 % 256}.{fake.i % 256}", "client_version": "SSH-2.0-OpenSSH_9.2",
        "auth_method": "publickey", "decisions": [], "channels": channels,
    }  # fmt: skip


def write_session(root: Path, fake: Fake, output: bytes | None = None) -> Path:
    """Session ``fake`` under ``root``; with ``output``, a shell channel that printed it."""
    directory = root / fake.day / fake.id
    directory.mkdir(parents=True)
    files = []
    if output is not None:
        files = ["1-shell.out", "1-shell.timing"]
        (directory / "1-shell.out").write_bytes(timing.log_header(fake.started.timestamp(), {}) + output)
        (directory / "1-shell.timing").write_bytes(
            timing.header("START_TIME", timing.script_time(fake.started.timestamp()))
            + (timing.data("O", 0.25, len(output)) if output else b"")
        )
    doc = document(fake, files)
    if fake.status != "active":
        seal(doc, directory, None)
    (directory / "session.json").write_text(json.dumps(doc))
    return directory


def write_sessions(
    root: Path, count: int, output: Callable[[Fake], bytes | None] = lambda fake: None, first: int = 0
) -> list[Fake]:
    """Sessions ``first`` .. ``first + count - 1``; returns them oldest first."""
    fakes = [Fake(i) for i in range(first, first + count)]
    for fake in fakes:
        write_session(root, fake, output(fake))
    return fakes


def newest_first(fakes: list[Fake]) -> Iterator[Fake]:
    return iter(sorted(fakes, key=lambda f: (f.started, f.id), reverse=True))
