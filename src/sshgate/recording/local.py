"""Recordings written to a directory (docs/recordings.md), optionally shipped to S3.

The relay's calls append references to the bytes to memory (channels.py). The recorder's flush
task visits the channels that have something, at least every ``flush_interval`` seconds, on a
channel's close, and early when a channel holds more than 8 MiB; each flush runs in the
recorder's own thread (files.py), so the event loop never waits on hashing or the disk.

A live session holds an exclusive ``flock`` on ``<dir>/.active/<session-id>``. The kernel drops
it when the process dies, so at the next start-up any marker that can be locked belongs to a
crashed process: its session is marked ``interrupted`` and sealed (hashes, signature).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sshgate.recording.channels import WAKE_BYTES, Channel, Options, make_channel, utc_now
from sshgate.recording.files import PRIVATE_FILE, Item, RecordFile, make_private_dirs
from sshgate.recording.manifest import SESSION_FILE, seal
from sshgate.recording.recorder import (
    SESSION_ID,
    ChannelKind,
    ChannelRecording,
    EndReason,
    EndStatus,
    RecordingError,
    SessionRecording,
)
from sshgate.recording.retention import prune

if TYPE_CHECKING:
    from sshgate.recording.s3 import S3Sink

log = structlog.get_logger("sshgate.recording")

ACTIVE_DIR = ".active"
COUNTS_INTERVAL_S = 1.0
"""How often session.json is rewritten only for new byte counts."""
RETENTION_INTERVAL_S = 3600.0


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Replace ``path`` atomically (a reader, or a crash, sees the old or the new document), 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(fd, PRIVATE_FILE)
        f.write(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _identity(user: dict[str, Any]) -> str:
    """``idp:<provider>:<type>:<name>``, as a login names it (docs/login.md)."""
    name = user.get("email") or user.get("name") or "?"
    return f"idp:{user.get('provider') or 'formal'}:{user.get('type') or 'human'}:{name}"


class _Session:
    """One SSH connection's recording: its directory, session.json and channels."""

    def __init__(
        self, recorder: FileRecorder, session_id: str, meta: dict[str, Any], directory: Path
    ) -> None:
        self.session_id = session_id
        self.recorder = recorder
        self.dir = directory
        self.channels: list[Channel] = []
        self.lock_fd = -1
        self.dirty = True  # session.json needs rewriting
        self.counted_at = 0.0
        self.closed = False
        user = meta.get("user") or {}
        self.doc: dict[str, Any] = {
            "version": 2,
            "id": session_id,
            "status": "active",
            "end_reason": None,
            "started": utc_now(),
            "ended": None,
            "user": user.get("email") or user.get("name"),
            "identity": _identity(user),
            "identity_type": user.get("type"),
            "login": user.get("login"),
            "groups": user.get("groups") or [],
            "resource": meta.get("resource"),
            "resource_type": meta.get("resource_type"),
            "native_user": meta.get("native_user"),
            "client_ip": meta.get("client_ip"),
            "client_version": meta.get("client_version"),
            "auth_method": meta.get("auth_method"),
            "decisions": [],
            "channels": [],
        }

    def open_channel(self, kind: ChannelKind, meta: dict[str, Any]) -> ChannelRecording:
        if self.closed:
            raise RecordingError("the session's recording is closed")
        n = len(self.channels) + 1
        channel = make_channel(n, kind, meta, self._changed, self.dir, self.recorder.options)
        self.channels.append(channel)
        self.dirty = True
        self._changed(channel)
        return channel

    def _changed(self, channel: Channel) -> None:
        """A channel got its first item since the last flush, holds a lot, or closed."""
        self.recorder.pending[channel] = self
        if channel.closed or channel.backlog() > WAKE_BYTES:
            self.recorder.wake()

    def note_decision(self, decision: dict[str, Any]) -> None:
        self.doc["decisions"].append({"at": utc_now(), **decision})
        self.dirty = True

    def note(self, fields: dict[str, Any]) -> None:
        self.doc.update(fields)
        self.dirty = True

    async def close(self, status: EndStatus = "closed", *, end_reason: EndReason | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        for channel in self.channels:
            channel.close()
        await self.recorder.finish(self, status, end_reason or "client")

    def snapshot(self) -> dict[str, Any]:
        self.dirty, self.counted_at = False, time.monotonic()
        return {**self.doc, "channels": [c.describe() for c in self.channels]}


Work = tuple[Channel, list[Item], list[bytes] | None]
"""A channel, the items a flush took from it, and its closing timing lines if it had closed."""


class FileRecorder:
    """Recordings under ``root``; with an S3 sink, ``root`` is the spool and files move to S3."""

    def __init__(
        self,
        root: Path,
        options: Options | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        sink: S3Sink | None = None,
        flush_interval: float = 0.5,
        retention_days: int = 0,
    ) -> None:
        self.root = root
        self.options = options or Options()
        self.signing_key = signing_key
        self.sink = sink
        self.flush_interval = flush_interval
        self.retention_days = retention_days
        self.pending: dict[Channel, _Session] = {}
        self._sessions: set[_Session] = set()
        self._counts: set[_Session] = set()  # byte counts changed since session.json was written
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._thread: ThreadPoolExecutor | None = None

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> list[str]:
        """Recover after a crash and start flushing; returns the sessions marked interrupted."""
        if self._task is not None:
            return []
        try:
            interrupted, leftovers = await asyncio.to_thread(self._recover)
        except OSError as exc:
            raise RecordingError(f"recording directory {self.root}: {exc.strerror or exc}") from None
        for session_id in interrupted:
            log.warning("recording.interrupted", session_id=session_id)
        if self.sink is not None:
            self.sink.start()
            for directory in leftovers:
                self.sink.put_session(directory)
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run())
        return interrupted

    async def start_session(self, session_id: str, meta: dict[str, Any]) -> SessionRecording:
        await self.start()
        if not SESSION_ID.fullmatch(session_id):
            raise RecordingError(f"unusable session id {session_id!r}")
        directory = self.root / time.strftime("%Y-%m-%d", time.gmtime()) / session_id
        session = _Session(self, session_id, meta, directory)
        try:
            await asyncio.to_thread(self._create, session)
        except OSError as exc:
            raise RecordingError(f"cannot create {directory}: {exc.strerror or exc}") from None
        self._sessions.add(session)
        return session

    async def _in_thread(self, func: Any, *args: Any) -> Any:
        """One thread does every file write, in order, apart from the default executor's users."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="sshgate-recording")
        return await asyncio.get_running_loop().run_in_executor(self._thread, func, *args)

    async def flush(self) -> None:
        """Write what the channels hold, and session.json where it changed; finished channels'
        files go to the sink."""
        async with self._lock:
            pending, self.pending = self.pending, {}
            work: list[Work] = []
            for channel in pending:
                if not channel.finished:
                    final = channel.closed  # read first: close() adds its last items before
                    work.append((channel, channel.take(), channel.closing_lines() if final else None))
            self._counts.update(pending.values())
            now = time.monotonic()
            docs = [
                (s, s.snapshot())
                for s in self._sessions
                if s.dirty or (s in self._counts and now - s.counted_at >= COUNTS_INTERVAL_S)
            ]
            self._counts.difference_update(s for s, _ in docs)
            if not work and not docs:
                return
            await self._in_thread(self._write, work, docs)
        for channel, _, closing in work:
            if closing is not None:  # this flush wrote the channel's end (it may have closed since)
                channel.finished = True
                if self.sink is not None:
                    for name in channel.files.names():
                        self.sink.put(pending[channel].dir / name)

    async def finish(self, session: _Session, status: str, end_reason: str) -> None:
        """Final flush, then seal and write session.json and release the session's marker."""
        await self.flush()
        async with self._lock:
            self._sessions.discard(session)
            doc = {**session.snapshot(), "status": status, "end_reason": end_reason, "ended": utc_now()}
            try:
                await self._in_thread(self._seal, session, doc)
            except OSError as exc:
                log.error("recording.error", session_id=session.session_id, error=str(exc))
                return
        if self.sink is not None:
            self.sink.put_session(session.dir)

    async def aclose(self, end_reason: EndReason = "drain") -> None:
        """Finish open sessions, stop flushing and give the sink time to upload."""
        for session in list(self._sessions):
            await session.close("closed", end_reason=end_reason)
        if self._task is not None:
            self._stopping = True
            self.wake()
            await self._task
            self._task = None
        if self._thread is not None:
            self._thread.shutdown()
            self._thread = None
        if self.sink is not None:
            await self.sink.aclose()

    async def retire(self, stopping: asyncio.Event) -> None:
        while self._sessions and not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 1.0)
        await self.aclose()

    async def _run(self) -> None:
        pruned_at = -RETENTION_INTERVAL_S
        pruning: asyncio.Task[None] | None = None
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                due = time.monotonic() - pruned_at >= RETENTION_INTERVAL_S
                if self.retention_days and self.sink is None and due and (pruning is None or pruning.done()):
                    # Beside the flushes, not in their thread: a first prune of a large store is slow.
                    pruned_at = time.monotonic()
                    pruning = asyncio.get_running_loop().create_task(asyncio.to_thread(self._prune))
            except Exception as exc:  # recording must outlive any one bad write
                log.error("recording.error", error=repr(exc))
        if pruning is not None:
            await pruning

    # file work, in a thread

    def _create(self, session: _Session) -> None:
        make_private_dirs(session.dir.parent)
        session.dir.mkdir(mode=0o700)
        os.chmod(session.dir, 0o700)
        marker = self.root / ACTIVE_DIR / session.session_id
        fd = os.open(marker, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, str(session.dir.relative_to(self.root)).encode())
        session.lock_fd = fd
        write_json(session.dir / SESSION_FILE, session.snapshot())

    def _write(self, work: list[Work], docs: list[tuple[_Session, dict[str, Any]]]) -> None:
        for channel, items, closing in work:
            channel.files.write(items, closing, _log_failure)
        for session, doc in docs:
            try:
                write_json(session.dir / SESSION_FILE, doc)
            except OSError as exc:
                log.error("recording.error", session_id=session.session_id, error=str(exc))

    def _seal(self, session: _Session, doc: dict[str, Any]) -> None:
        known = {
            f.name: digest
            for c in session.channels
            for f in c.files.files()
            if (digest := f.digest()) is not None
        }
        seal(doc, session.dir, self.signing_key, known)
        write_json(session.dir / SESSION_FILE, doc)
        (self.root / ACTIVE_DIR / session.session_id).unlink(missing_ok=True)
        os.close(session.lock_fd)

    def _prune(self) -> None:
        try:
            removed = prune(self.root, self.retention_days, datetime.datetime.now(datetime.UTC))
        except OSError as exc:
            log.error("recording.error", error=f"retention: {exc}")
            return
        if removed:
            log.info("recording.pruned", sessions=len(removed), retention_days=self.retention_days)

    def _recover(self) -> tuple[list[str], list[Path]]:
        """Seal sessions whose process died; with a sink, list every finished session dir."""
        make_private_dirs(self.root / ACTIVE_DIR)
        active = self.root / ACTIVE_DIR
        live: set[str] = set()
        interrupted = []
        for marker in sorted(active.iterdir()):
            fd = os.open(marker, os.O_RDWR | os.O_CLOEXEC)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    live.add(marker.name)
                    continue
                directory = self.root / marker.read_text().strip()
                if (directory / SESSION_FILE).is_file():
                    doc = json.loads((directory / SESSION_FILE).read_text(encoding="utf-8"))
                    doc["status"] = "interrupted"
                    if doc.get("version", 1) >= 2:
                        doc["ended"], doc["end_reason"] = utc_now(), "error"
                    else:
                        doc["ended_at"] = utc_now()
                    seal(doc, directory, self.signing_key)
                    write_json(directory / SESSION_FILE, doc)
                    interrupted.append(marker.name)
                marker.unlink()
            finally:
                os.close(fd)
        leftovers = []
        if self.sink is not None:
            for doc_path in sorted(self.root.glob(f"*/*/{SESSION_FILE}")):
                if doc_path.parent.name not in live and not doc_path.parent.parent.name.startswith("."):
                    leftovers.append(doc_path.parent)
        return interrupted, leftovers


def _log_failure(file: RecordFile, error: str) -> None:
    log.error("recording.error", file=str(file.path), error=error)
