"""Recordings written to a directory (DESIGN §7), optionally shipped to S3 from there.

The relay's calls append raw items to memory; one writer task per recorder flushes every channel
at least every ``flush_interval`` seconds, on a channel's close, and early when a channel holds
more than 1 MiB. A flush hands the items to the recorder's writer process, which encodes and
appends them (see :mod:`sshgate.recording.writer`); the event loop never waits on it or the disk.

A live session holds an exclusive ``flock`` on ``<dir>/.active/<session-id>``. The kernel drops
it when the process dies, so at the next start-up any marker that can be locked belongs to a
crashed process: its session is marked ``interrupted`` and sealed (hashes, signature).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sshgate.recording.channels import Channel, Item, make_channel, utc_now
from sshgate.recording.manifest import SESSION_FILE, seal
from sshgate.recording.recorder import (
    ChannelKind,
    ChannelRecording,
    EndStatus,
    RecordingError,
    SessionRecording,
)
from sshgate.recording.writer import Op, WriterGone, WriterProcess

if TYPE_CHECKING:
    from sshgate.recording.s3 import S3Sink

log = structlog.get_logger("sshgate.recording")

ACTIVE_DIR = ".active"
COALESCE_S = 0.005
COALESCE_BYTES = 64 << 10
COUNTS_INTERVAL_S = 1.0
"""How often session.json is rewritten only for new byte counts: bulk output flushes every MiB."""
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Replace ``path`` atomically: a reader (or a crash) sees the old or the new document."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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
        self.dirty = True
        self.counted_at = 0.0
        self.closed = False
        user = meta.get("user") or {}
        self.doc: dict[str, Any] = {
            "version": 1,
            "session_id": session_id,
            "status": "active",
            "started_at": utc_now(),
            "ended_at": None,
            "user": user,
            "resource": meta.get("resource"),
            "resource_type": meta.get("resource_type"),
            "native_user": meta.get("native_user"),
            "client": {"ip": meta.get("client_ip"), "version": meta.get("client_version")},
            "auth_method": meta.get("auth_method"),
            "decisions": [],
            "channels": [],
        }
        who = user.get("email") or user.get("name") or "?"
        self.title = f"{who} on {meta.get('resource')} as {meta.get('native_user')}"

    def open_channel(self, kind: ChannelKind, meta: dict[str, Any]) -> ChannelRecording:
        if self.closed:
            raise RecordingError("the session's recording is closed")
        channel = make_channel(
            len(self.channels) + 1, kind, meta, self.recorder.wake, self.recorder.capture_input, self.title
        )
        self.channels.append(channel)
        self.dirty = True
        self.recorder.wake()
        return channel

    def note_decision(self, decision: dict[str, Any]) -> None:
        self.doc["decisions"].append({"at": utc_now(), **decision})
        self.dirty = True

    async def close(self, status: EndStatus = "closed", *, end_reason: str | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        for channel in self.channels:
            channel.close()
        await self.recorder.finish(self, status, end_reason)

    def snapshot(self) -> dict[str, Any]:
        self.dirty, self.counted_at = False, time.monotonic()
        return {**self.doc, "channels": [c.describe() for c in self.channels]}


class FileRecorder:
    """Recordings under ``root``; with an S3 sink, ``root`` is the spool and files move to S3."""

    def __init__(
        self,
        root: Path,
        capture_input: bool = False,
        signing_key: Ed25519PrivateKey | None = None,
        sink: S3Sink | None = None,
        flush_interval: float = 0.5,
    ) -> None:
        self.root = root
        self.capture_input = capture_input
        self.signing_key = signing_key
        self.sink = sink
        self.flush_interval = flush_interval
        self._sessions: set[_Session] = set()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._writer = WriterProcess()

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> list[str]:
        """Recover after a crash and start the writer; returns the sessions marked interrupted."""
        if self._task is not None:
            return []
        try:
            interrupted, leftovers = await asyncio.to_thread(self._recover)
        except OSError as exc:
            raise RecordingError(f"recording directory {self.root}: {exc.strerror or exc}") from None
        try:
            await asyncio.to_thread(self._writer.start)
        except OSError as exc:
            raise RecordingError(f"cannot start the recording writer process: {exc}") from None
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
        if not _SAFE_ID.fullmatch(session_id):
            raise RecordingError(f"unusable session id {session_id!r}")
        directory = self.root / time.strftime("%Y-%m-%d", time.gmtime()) / session_id
        session = _Session(self, session_id, meta, directory)
        try:
            await asyncio.to_thread(self._create, session)
        except OSError as exc:
            raise RecordingError(f"cannot create {directory}: {exc.strerror or exc}") from None
        self._sessions.add(session)
        return session

    async def flush(self) -> None:
        """Write what every channel holds; finished channels go to the sink."""
        async with self._lock:
            ops: list[Op] = []
            data: list[bytes] = []
            sent: list[tuple[_Session, Channel, bool]] = []
            docs = []
            for session in self._sessions:
                counted, changed = False, session.dirty
                for channel in session.channels:
                    if channel.finished:
                        continue
                    final = channel.closed
                    items = channel.take()
                    if items or final or not channel.started:
                        _channel_ops(str(session.dir / channel.file), channel, items, final, ops, data)
                        sent.append((session, channel, final))
                        counted, changed = True, changed or final or not channel.started
                if changed or (counted and time.monotonic() - session.counted_at >= COUNTS_INTERVAL_S):
                    docs.append((session, session.snapshot()))
            if not ops and not docs:
                return
            failed, digests = await asyncio.to_thread(self._write, ops, data, docs)
        for session, channel, final in sent:
            path = str(session.dir / channel.file)
            if path in failed:
                continue
            channel.started = True
            if final:
                channel.finished, channel.digest = True, digests.get(path)
                if self.sink is not None:
                    self.sink.put(session.dir / channel.file)

    async def finish(self, session: _Session, status: str, end_reason: str | None = None) -> None:
        """Final flush, then seal and write session.json and release the session's marker."""
        await self.flush()
        async with self._lock:
            self._sessions.discard(session)
            doc = {**session.snapshot(), "status": status, "ended_at": utc_now(), "end_reason": end_reason}
            try:
                await asyncio.to_thread(self._seal, session, doc)
            except OSError as exc:
                log.error("recording.error", session_id=session.session_id, error=str(exc))
                return
        if self.sink is not None:
            self.sink.put_session(session.dir)

    async def aclose(self) -> None:
        """Finish open sessions, stop the writer and give the sink time to upload."""
        for session in list(self._sessions):
            await session.close("closed")
        if self._task is not None:
            # Not cancelled: a flush's request runs on in its thread, and the writer process
            # must not be closed under it.
            self._stopping = True
            self.wake()
            await self._task
            self._task = None
        await asyncio.to_thread(self._writer.close)
        if self.sink is not None:
            await self.sink.aclose()

    async def retire(self, stopping: asyncio.Event) -> None:
        while self._sessions and not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 1.0)
        await self.aclose()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # the writer must outlive any one bad write
                log.error("recording.error", error=repr(exc))

    # file work, in a thread

    def _create(self, session: _Session) -> None:
        session.dir.mkdir(parents=True, exist_ok=False)
        marker = self.root / ACTIVE_DIR / session.session_id
        fd = os.open(marker, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, str(session.dir.relative_to(self.root)).encode())
        session.lock_fd = fd
        write_json(session.dir / SESSION_FILE, session.snapshot())

    def _write(
        self, ops: list[Op], data: list[bytes], docs: list[tuple[_Session, dict[str, Any]]]
    ) -> tuple[set[str], dict[str, dict[str, Any]]]:
        """Channel files through the writer process, then session.json files; returns the paths
        that failed and the digests of the files finished."""
        failures: list[tuple[str, str]] = []
        digests: dict[str, dict[str, Any]] = {}
        for attempt in range(2 if ops else 0):
            try:
                failures, digests = self._writer.request(ops, data)
                break
            except WriterGone as exc:
                # Once more with a new process: better a request written twice than lost.
                log.error("recording.writer_restarted", error=str(exc), retried=attempt == 0)
                failures = [(path, str(exc)) for _, path, _, _ in ops]
        failed = dict(failures)
        for path, error in failed.items():
            log.error("recording.error", file=path, error=error)
        for session, doc in docs:
            try:
                write_json(session.dir / SESSION_FILE, doc)
            except OSError as exc:
                log.error("recording.error", session_id=session.session_id, error=str(exc))
        return set(failed), digests

    def _seal(self, session: _Session, doc: dict[str, Any]) -> None:
        known = {c.file: c.digest for c in session.channels if c.digest is not None}
        seal(doc, session.dir, self.signing_key, known)
        write_json(session.dir / SESSION_FILE, doc)
        (self.root / ACTIVE_DIR / session.session_id).unlink(missing_ok=True)
        os.close(session.lock_fd)

    def _recover(self) -> tuple[list[str], list[Path]]:
        """Seal sessions whose process died; with a sink, list every finished session dir."""
        active = self.root / ACTIVE_DIR
        active.mkdir(parents=True, exist_ok=True)
        live: set[str] = set()
        interrupted = []
        for marker in sorted(active.iterdir()):
            fd = os.open(marker, os.O_RDWR)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    live.add(marker.name)
                    continue
                directory = self.root / marker.read_text().strip()
                if (directory / SESSION_FILE).is_file():
                    doc = json.loads((directory / SESSION_FILE).read_text(encoding="utf-8"))
                    doc["status"], doc["ended_at"] = "interrupted", utc_now()
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


def _channel_ops(
    path: str, channel: Channel, items: list[Item], final: bool, ops: list[Op], data: list[bytes]
) -> None:
    """One channel's part of a writer request: open (every time: a restarted writer needs it),
    its items with byte payloads moved to ``data``, and close when ``final``.

    Payloads of one kind that arrive within ``COALESCE_S`` of the first become one item (they
    lie side by side in the writer's memory, so nothing is copied): terminals hand over output
    in small reads, and per event the writer spent far more than on the bytes (127 ms per MB
    of output in 64-byte chunks, against 4 ms in 32 KiB ones). Players cannot show the
    difference. Up to ``COALESCE_BYTES``, which keeps the writer's work in the CPU cache.
    """
    ops.append(("open", path, channel.header(), (channel.fmt, channel.t0)))
    group: tuple[str, float, int] | None = None  # code, time, length of the payload being merged
    for t, code, value in items:
        if isinstance(value, bytes):
            data.append(value)
            if group and group[0] == code and t - group[1] < COALESCE_S and group[2] < COALESCE_BYTES:
                group = (code, group[1], group[2] + len(value))
                continue
        if group:
            ops.append((group[0], path, group[1], group[2]))
        group = (code, t, len(value)) if isinstance(value, bytes) else None
        if group is None:
            ops.append((code, path, t, value))
    if group:
        ops.append((group[0], path, group[1], group[2]))
    if final:
        ops.append(("close", path, None, None))
