"""The read side of recordings (docs/recordings.md): list, filter and page sessions, read a
session's document, verify it and stream a terminal channel as asciicast, from the local
recordings directory or from S3 plus the local spool. Used by the web app and ``sshgate
recordings``.

Listing goes through an in-memory index of session summaries (sources.py), refreshed
incrementally before each call. Every file read and every bit of CPU work runs in a thread, so
the event loop never waits on the disk or S3.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import io
import json
import operator
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sshgate.aws.clients import AwsClients
from sshgate.config import Config
from sshgate.recording import asciicast, reader
from sshgate.recording.manifest import check, load_signing_key
from sshgate.recording.recorder import SESSION_ID, RecordingError
from sshgate.recording.sources import Entry, LocalSource, S3Source, Source
from sshgate.recording.summary import (
    ChannelSummary,
    CursorError,
    SessionQuery,
    SessionSummary,
    SortKey,
    decode_cursor,
    encode_cursor,
    matches,
    normalized,
    sort_key,
)

__all__ = [
    "Catalog",
    "ChannelSummary",
    "CursorError",
    "NotFound",
    "RecordingCatalog",
    "SessionQuery",
    "SessionSummary",
    "open_catalog",
]

MAX_LIMIT = 500
REBUILD = 256
"""More changed sessions than this (a first listing), and the index is sorted anew."""
BATCH = 256 << 10
"""Bytes of cast handed from the reading thread to the event loop at a time."""
SEARCH_THREADS = 2
"""Output searches (``q``) read whole recordings: they get threads of their own, so they never
hold up the event loop's default pool, which new SSH sessions wait on (recording creation,
token checks)."""


class NotFound(RecordingError):
    """No such session, or no such terminal channel in it."""


class Catalog(Protocol):
    async def warm(self) -> None:
        """Build the index now, so the first page a person asks for does not pay for it."""
        ...

    async def query(self, query: SessionQuery) -> tuple[list[SessionSummary], str | None]:
        """A page of sessions, newest first, and the cursor of the next page (None at the end;
        with ``q``, a full page's cursor may lead to an empty page, as output is read only for the
        sessions a page shows). Raises :class:`CursorError` for a cursor this catalog did not hand out."""
        ...

    async def document(self, session_id: str) -> dict[str, Any] | None:
        """session.json (a version 1 one under the version 2 names); None for an unknown or
        malformed id or an unreadable document."""
        ...

    async def verify(self, session_id: str) -> tuple[bool, str]:
        """Whether every file matches the manifest and the signature holds, and what that proves."""
        ...

    def cast(self, session_id: str, channel: int) -> AsyncIterator[bytes]:
        """Terminal channel ``channel`` as asciicast v2, streamed; of an active session, what is
        flushed so far. Raises :class:`NotFound` at the first item for an unknown session or channel."""
        ...

    async def events(self, session_id: str, channel: int, limit: int) -> list[dict[str, Any]]:
        """The first ``limit`` events of an sftp, scp / rsync or forward channel (its ``.jsonl``:
        file operations, transfers, opens and closes); [] when there are none or it is unreadable."""
        ...


class RecordingCatalog:
    """Sessions from ``sources``, the first source that has an id winning (the S3 spool before
    S3: it is the fresher while a session runs). Thread-safe: refreshes take a lock."""

    def __init__(self, sources: list[Source], trusted: Ed25519PublicKey | None = None) -> None:
        self.sources = sources
        self.trusted = trusted
        self._lock = threading.Lock()
        self._keys: list[SortKey] = []  # ascending
        self._entries: list[Entry] = []  # in the order of _keys
        self._by_id: dict[str, Entry] = {}
        self._searches = ThreadPoolExecutor(SEARCH_THREADS, thread_name_prefix="sshgate-search")

    # synchronous side: the CLI's, and the threads' of the async methods

    def refresh(self) -> None:
        """Bring the index up to date with the sources: a stat per day and per active session
        when nothing changed, and a few list inserts for the sessions that did."""
        with self._lock:
            changed = set().union(*(source.refresh() for source in self.sources))
            if not changed:
                return
            if len(changed) > REBUILD:
                by_id: dict[str, Entry] = {}
                for source in self.sources:
                    for entry in source.entries():
                        by_id.setdefault(entry.summary.id, entry)
                entries = sorted(by_id.values(), key=operator.attrgetter("key"))
                keys = [e.key for e in entries]
            else:  # copies, changed then swapped in: a listing in another thread keeps its snapshot
                keys, entries, by_id = list(self._keys), list(self._entries), dict(self._by_id)
                for session_id in changed:
                    old = by_id.pop(session_id, None)
                    if old is not None:
                        i = bisect.bisect_left(keys, old.key)
                        del keys[i]
                        del entries[i]
                    new = next((e for source in self.sources if (e := source.get(session_id))), None)
                    if new is not None:
                        by_id[session_id] = new
                        i = bisect.bisect_left(keys, new.key)
                        keys.insert(i, new.key)
                        entries.insert(i, new)
            self._keys, self._entries, self._by_id = keys, entries, by_id

    def newest_first(self, after: SortKey | None = None) -> Iterator[Entry]:
        """Every session, newest first, after ``after`` if given; a snapshot of the index."""
        self.refresh()
        keys, entries = self._keys, self._entries
        start = len(keys) if after is None else bisect.bisect_left(keys, after)
        for i in range(start - 1, -1, -1):
            yield entries[i]

    def find(self, session_id: str) -> Entry:
        if not SESSION_ID.fullmatch(session_id):
            raise NotFound(f"not a session id: {session_id!r}")
        self.refresh()
        entry = self._by_id.get(session_id)
        if entry is None:
            where = " or ".join(source.where for source in self.sources)
            raise NotFound(f"no recording {session_id} in {where}")
        return entry

    def page(self, query: SessionQuery) -> tuple[list[SessionSummary], str | None]:
        query = normalized(query)
        after = decode_cursor(query.cursor) if query.cursor else None
        limit = max(1, min(query.limit, MAX_LIMIT))
        found: list[SessionSummary] = []
        for entry in self.newest_first(after):
            if not matches(entry.summary, query):
                continue
            if len(found) == limit:  # one more exists
                return found, encode_cursor(sort_key(found[-1]))
            if query.q and not self.has_text(entry, query.q):
                continue
            found.append(entry.summary)
        return found, None

    def has_text(self, entry: Entry, text: str) -> bool:
        try:
            doc = reader.load(entry.files)
        except RecordingError:
            return False
        for channel in doc.get("channels", []):
            if reader.is_terminal(channel):
                try:
                    for _ in reader.output_lines(entry.files, channel, text):
                        return True
                except RecordingError:
                    continue
        return False

    def load(self, session_id: str) -> tuple[Entry, dict[str, Any]]:
        entry = self.find(session_id)
        return entry, reader.load(entry.files)

    def check(self, session_id: str, trusted: Ed25519PublicKey | None, source: str) -> tuple[bool, list[str]]:
        entry, doc = self.load(session_id)
        return check(entry.files, session_id, doc.get("signature"), trusted, source)

    def export(self, session_id: str, channel: int | None) -> Iterator[bytes]:
        """The cast of terminal channel ``channel`` (None: the first terminal channel)."""
        entry, doc = self.load(session_id)
        try:
            chosen = reader.terminal_channel(doc, channel)
        except RecordingError as exc:
            raise NotFound(str(exc)) from None
        return asciicast.export(entry.files, doc, chosen)

    def channel_events(self, session_id: str, channel: int, limit: int) -> list[dict[str, Any]]:
        entry, doc = self.load(session_id)
        names = [
            name
            for c in doc.get("channels", [])
            if c.get("n") == channel
            for name in c.get("files") or ()
            if str(name).endswith(".jsonl")
        ]
        found: list[dict[str, Any]] = []
        for name in names[:1]:
            with io.TextIOWrapper(entry.files.open(name), encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    if len(found) >= limit:
                        break
                    with contextlib.suppress(ValueError):
                        event = json.loads(line)
                        if isinstance(event, dict):
                            found.append(event)
        return found

    # the Catalog interface

    async def warm(self) -> None:
        await asyncio.to_thread(self.refresh)

    async def query(self, query: SessionQuery) -> tuple[list[SessionSummary], str | None]:
        if query.q:
            return await asyncio.get_running_loop().run_in_executor(self._searches, self.page, query)
        return await asyncio.to_thread(self.page, query)

    async def document(self, session_id: str) -> dict[str, Any] | None:
        try:
            return (await asyncio.to_thread(self.load, session_id))[1]
        except RecordingError:
            return None

    async def verify(self, session_id: str) -> tuple[bool, str]:
        source = "the configured signing_key"
        try:
            ok, lines = await asyncio.to_thread(self.check, session_id, self.trusted, source)
        except RecordingError as exc:
            return False, str(exc)
        return ok, "; ".join(lines)

    async def events(self, session_id: str, channel: int, limit: int) -> list[dict[str, Any]]:
        try:
            return await asyncio.to_thread(self.channel_events, session_id, channel, limit)
        except (RecordingError, OSError):
            return []

    async def cast(self, session_id: str, channel: int) -> AsyncIterator[bytes]:
        pieces = await asyncio.to_thread(self.export, session_id, channel)
        async with contextlib.aclosing(_batches(pieces)) as batches:
            async for batch in batches:
                yield batch


async def _batches(pieces: Iterator[bytes]) -> AsyncGenerator[bytes, None]:
    """``pieces`` pulled in a thread, about :data:`BATCH` bytes at a time: memory stays flat, and
    a reader that stops early closes the iterator (its files) once the thread is done with it."""
    lock = threading.Lock()

    def pull() -> bytes:
        with lock:
            batch: list[bytes] = []
            size = 0
            for piece in pieces:
                batch.append(piece)
                size += len(piece)
                if size >= BATCH:
                    break
            return b"".join(batch)

    def close() -> None:
        with lock:
            pieces_close()

    pieces_close: Callable[[], None] = getattr(pieces, "close", lambda: None)
    try:
        while batch := await asyncio.to_thread(pull):
            yield batch
    finally:
        asyncio.get_running_loop().run_in_executor(None, close)


def open_catalog(config: Config) -> RecordingCatalog:
    """The catalog the recording config names: the local directory, or S3 and its spool.
    Raises :class:`RecordingError` for an unusable signing key."""
    settings = config.recording
    trusted = load_signing_key(settings.signing_key).public_key() if settings.signing_key else None
    sources: list[Source] = [LocalSource(config.recording_dir)]
    if settings.sink == "s3" and settings.s3 is not None:
        s3 = settings.s3
        clients = AwsClients(config.aws)
        sources.append(S3Source(lambda: clients.client("s3", s3.region), s3.bucket, s3.prefix))
    return RecordingCatalog(sources, trusted)
