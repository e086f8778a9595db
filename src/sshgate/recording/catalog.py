"""The recordings read side the web app uses (docs/api.md): list, filter, page, metadata,
verify, stream a channel as asciicast.

INTERIM on branch ``web``: the agreed interface with a plain scan over :mod:`reader` (local sink
only), so the web app runs and is tested; branch ``catalog`` replaces this module as a whole
with the indexed, S3-capable implementation.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sshgate.config import Config
from sshgate.recording import asciicast, reader
from sshgate.recording.manifest import load_signing_key, verify
from sshgate.recording.recorder import SESSION_ID, RecordingError
from sshgate.recording.search import LineMatcher


@dataclass(frozen=True, slots=True)
class ChannelSummary:
    n: int
    kind: str  # shell | exec | sftp | forward


@dataclass(frozen=True, slots=True)
class SessionSummary:
    id: str
    user: str
    identity: str
    resource: str
    native_user: str
    client_ip: str
    status: str
    started: datetime
    ended: datetime | None
    channels: tuple[ChannelSummary, ...]


@dataclass(frozen=True, slots=True)
class SessionQuery:
    user: str | None = None
    resource: str | None = None
    native_user: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None
    owner_email: str | None = None  # set for role "user": only their sessions
    limit: int = 50
    cursor: str | None = None


class Catalog(Protocol):
    async def query(self, query: SessionQuery) -> tuple[list[SessionSummary], str | None]: ...
    async def document(self, session_id: str) -> dict[str, Any] | None: ...
    async def verify(self, session_id: str) -> tuple[bool, str]: ...
    def cast(self, session_id: str, channel: int) -> AsyncIterator[bytes]: ...
    async def events(self, session_id: str, channel: int, limit: int) -> list[dict[str, Any]]:
        """The first ``limit`` lines of an sftp, transfer or forward channel's ``.jsonl``."""
        ...


def _time(value: Any) -> datetime | None:
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _summary(doc: dict[str, Any]) -> SessionSummary:
    channels = tuple(
        ChannelSummary(int(c.get("n", 0)), "sftp" if c.get("kind") == "sftp" else str(c.get("kind")))
        for c in doc.get("channels", [])
    )
    return SessionSummary(
        str(doc.get("id")), str(doc.get("user") or ""), str(doc.get("identity") or ""),
        str(doc.get("resource") or ""), str(doc.get("native_user") or ""), str(doc.get("client_ip") or ""),
        str(doc.get("status") or ""), _time(doc.get("started")) or datetime.fromtimestamp(0, UTC),
        _time(doc.get("ended")), channels,
    )  # fmt: skip


def _owner(doc: dict[str, Any]) -> str | None:
    parts = str(doc.get("identity") or "").split(":", 3)
    return parts[3].lower() if len(parts) == 4 and parts[2] == "human" else None


def _prints(directory: Path, doc: dict[str, Any], text: str) -> bool:
    for channel in doc.get("channels", []):
        if not reader.is_terminal(channel):
            continue
        matcher = LineMatcher(text)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        for _, code, value in reader.events(directory, channel):
            if code == "o" and matcher.feed(decoder.decode(value)):
                return True
        if matcher.end():
            return True
    return False


class LocalCatalog:
    def __init__(self, root: Path, signing_key: str | None) -> None:
        self.root = root
        self.signing_key = signing_key

    def _matches(self, directory: Path, doc: dict[str, Any], q: SessionQuery) -> bool:
        started = _time(doc.get("started"))
        return (
            (q.user is None or doc.get("user") == q.user)
            and (q.resource is None or doc.get("resource") == q.resource)
            and (q.native_user is None or doc.get("native_user") == q.native_user)
            and (q.status is None or doc.get("status") == q.status)
            and (q.since is None or (started is not None and started >= q.since))
            and (q.until is None or (started is not None and started <= q.until))
            and (q.owner_email is None or _owner(doc) == q.owner_email)
            and (not q.q or _prints(directory, doc, q.q))
        )

    def _query(self, q: SessionQuery) -> tuple[list[SessionSummary], str | None]:
        start = int(q.cursor) if q.cursor and q.cursor.isdigit() else 0
        found = [doc for directory, doc in reader.sessions(self.root) if self._matches(directory, doc, q)]
        page = found[start : start + q.limit]
        more = start + q.limit < len(found)
        return [_summary(doc) for doc in page], (str(start + q.limit) if more else None)

    async def query(self, query: SessionQuery) -> tuple[list[SessionSummary], str | None]:
        return await asyncio.to_thread(self._query, query)

    def _directory(self, session_id: str) -> Path | None:
        if not SESSION_ID.fullmatch(session_id):
            return None
        try:
            return reader.find(self.root, session_id)
        except RecordingError:
            return None

    async def document(self, session_id: str) -> dict[str, Any] | None:
        directory = self._directory(session_id)
        if directory is None:
            return None
        try:
            return await asyncio.to_thread(reader.load, directory)
        except RecordingError:
            return None

    async def verify(self, session_id: str) -> tuple[bool, str]:
        directory = self._directory(session_id)
        if directory is None:
            return False, "no such session"
        trusted = load_signing_key(self.signing_key).public_key() if self.signing_key else None
        problems = await asyncio.to_thread(verify, directory, trusted)
        return (not problems, "; ".join(problems) or "every file matches its hash")

    async def cast(self, session_id: str, channel: int) -> AsyncIterator[bytes]:
        directory = self._directory(session_id)
        if directory is None:
            return
        doc = reader.load(directory)
        found = reader.terminal_channel(doc, channel)
        out = io.BytesIO()
        asciicast.write(
            out, asciicast.header(doc, found, reader.opened_unix(found)), reader.events(directory, found)
        )
        yield out.getvalue()

    async def events(self, session_id: str, channel: int, limit: int) -> list[dict[str, Any]]:
        directory = self._directory(session_id)
        name = f"{channel}-"
        if directory is None:
            return []
        files = [p for p in directory.glob(f"{name}*.jsonl")]
        found: list[dict[str, Any]] = []
        for path in files[:1]:
            with path.open(encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    if len(found) >= limit:
                        break
                    with contextlib.suppress(ValueError):
                        found.append(json.loads(line))
        return found


def open_catalog(config: Config) -> Catalog:
    return LocalCatalog(Path(config.recording_dir), config.recording.signing_key)
