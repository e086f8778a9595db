"""``workers: N`` without ``state:``: the supervisor holds the counters and the session registry,
and each worker reaches them over a socketpair it inherits (no file, no port, no path limit).

A worker's call waits at most :data:`CALL_TIMEOUT_S`; without an answer it counts on its own,
as a replica does without its store. A worker that dies takes its sessions with it: the
supervisor drops them when the worker's end of the pair closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Any

from sshgate import audit
from sshgate.state import rpc
from sshgate.state.availability import Availability
from sshgate.state.base import (
    LiveSession,
    OutputChunk,
    RecordKind,
    RevokedHandler,
    StateUnavailable,
    TerminateHandler,
)
from sshgate.state.counters import LocalCounters
from sshgate.state.file_bindings import FileBindings
from sshgate.state.outputs import OutputHub
from sshgate.state.record_copy import CopiedRecordCalls, CopiedRecords
from sshgate.state.records import Entry, ExpiringRecords

WORKER_STATE_FD = "SSHGATE_STATE_FD"
CALL_TIMEOUT_S = 0.25


class _Link:
    """One worker as the supervisor sees it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.replica = ""
        self.watching: Counter[str] = Counter()

    def push(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(rpc.encode(message))


class StateHost:
    """In the supervisor: the one set of counters every worker of the gateway shares."""

    def __init__(self) -> None:
        self.counters = LocalCounters()
        self.records = ExpiringRecords()
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.log = audit.logger()

    def new_worker(self) -> socket.socket:
        """A socket to hand to a new worker (inheritable); the other end is served here."""
        mine, theirs = socket.socketpair()
        theirs.set_inheritable(True)
        task = asyncio.get_running_loop().create_task(self._serve(mine))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return theirs

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, sock: socket.socket) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        link = _Link(writer)
        self._links.add(link)
        try:
            while True:
                message = await rpc.read_frame(reader)
                try:
                    result: Any = self._handle(link, message)
                    reply = {"id": message.get("id"), "ok": True, "result": result}
                except (KeyError, TypeError, ValueError) as exc:
                    reply = {"id": message.get("id"), "ok": False, "error": f"{type(exc).__name__}: {exc}"}
                if "id" in message:  # output is fire-and-forget: no answer wanted
                    writer.write(rpc.encode(reply))
        except (asyncio.IncompleteReadError, ConnectionError, rpc.FrameError):
            pass
        finally:
            watched = {s: self._watchers(s) for s in link.watching}
            self._links.discard(link)
            for session_id, before in watched.items():
                self._tell_owner(session_id, before)
            for session in list(self.counters.sessions.values()):
                if session.replica == link.replica:
                    self.counters.close_session(session.session_id)
            writer.close()

    def _handle(self, link: _Link, message: dict[str, Any]) -> Any:
        op, args = message["op"], message.get("args", {})
        counters = self.counters
        if op == "hello":
            link.replica = str(args["replica"])
            return True
        if op == "locked_for":
            return counters.locked_for(args["a"])
        if op == "failure":
            return counters.failure(args["a"], int(args["limit"]), float(args["lockout_s"]))
        if op == "open":
            session = LiveSession(**args["session"])
            if session.replica != link.replica:
                raise ValueError("a worker registers only its own sessions")
            return counters.open_session(session, args["limit"])
        if op == "close":
            known = counters.sessions.get(args["s"])
            if known is not None and known.replica == link.replica:
                counters.close_session(known.session_id)
            return True
        if op == "sessions":
            return [asdict(s) for s in counters.sessions.values()]
        if op == "terminate":
            return self._terminate(args["s"], args["by"])
        if op == "publish":
            # The owner already fed its own watchers; the others get it from here.
            for other in self._links:
                if other is not link and other.watching[args["s"]] > 0:
                    other.push({"push": "output", **args})
            return True
        if op == "watch":
            session_id = args["s"]
            before = self._watchers(session_id)
            link.watching[session_id] += int(args["n"])
            if link.watching[session_id] <= 0:
                del link.watching[session_id]
            self._tell_owner(session_id, before)
            return True
        if op.startswith("record_"):
            return self._record(op, args)
        raise ValueError(f"unknown operation {op!r}")

    def _record(self, op: str, args: dict[str, Any]) -> Any:
        """The web app's records (it runs in worker 0; a restarted worker 0 finds them here)."""
        kind, key = args["kind"], str(args["key"])
        if op == "record_put":
            if not isinstance(args["doc"], dict):
                raise TypeError("a record is a JSON object")
            self.records.put(kind, key, args["doc"], float(args["e"]))
            return True
        if op == "record_get":
            return self.records.entry(kind, key)
        if op == "record_take":
            return self.records.take(kind, key)
        if op == "record_drop":
            self.records.drop(kind, key)
            return True
        if op == "record_claim":
            return self.records.claim(kind, key, float(args["e"]))
        raise ValueError(f"unknown operation {op!r}")

    def _owner(self, session_id: str) -> _Link | None:
        session = self.counters.sessions.get(session_id)
        return next((x for x in self._links if session and x.replica == session.replica), None)

    def _watchers(self, session_id: str) -> int:
        owner = self._owner(session_id)
        return sum(x.watching[session_id] for x in self._links if x is not owner)

    def _tell_owner(self, session_id: str, before: int) -> None:
        """The owning worker publishes only while another worker watches: say when that changes."""
        now = self._watchers(session_id)
        owner = self._owner(session_id)
        if owner is not None and (before > 0) != (now > 0):
            owner.push({"push": "watched", "s": session_id, "on": now > 0})

    def _terminate(self, session_id: str, by: str) -> bool:
        owner = self._owner(session_id)
        if owner is None:
            return False
        owner.push({"push": "terminate", "s": session_id, "by": by})
        return True


class WorkerState(FileBindings, CopiedRecordCalls):
    """In a worker: the supervisor's counters; SSO bindings from the shared file in ``data_dir``."""

    def __init__(self, fd: int, data_dir: str, set_gauge: Callable[[bool], None]) -> None:
        super().__init__(data_dir)
        self.replica = uuid.uuid4().hex
        self._sock = socket.socket(fileno=fd)
        self.local = LocalCounters()
        self.hub = OutputHub()
        self._watched_elsewhere: set[str] = set()
        self.availability = Availability(set_gauge)
        self._writer: asyncio.StreamWriter | None = None
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._on_terminate: TerminateHandler = lambda _sid, _by: False
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.records = CopiedRecords(_SupervisorRecords(self))

    @property
    def available(self) -> bool:
        return self.availability.available

    async def start(self, on_terminate: TerminateHandler, on_revoked: RevokedHandler) -> None:
        self._on_terminate = on_terminate
        reader, self._writer = await asyncio.open_unix_connection(sock=self._sock)
        self._tasks = [asyncio.get_running_loop().create_task(self._read(reader))]
        self._tasks.append(self.watch_bindings(on_revoked, self._stop))
        with contextlib.suppress(StateUnavailable):
            await self._call("hello", replica=self.replica)

    async def aclose(self) -> None:
        self._stop.set()
        if self._writer is not None:
            self._writer.close()
        self._tasks[0].cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = await rpc.read_frame(reader)
                if message.get("push") == "terminate":
                    self._on_terminate(str(message["s"]), str(message["by"]))
                elif message.get("push") == "output":
                    chunk = OutputChunk(int(message["c"]), float(message["t"]), rpc.unb64(message["d"]))
                    self.hub.publish(str(message["s"]), chunk)
                elif message.get("push") == "watched":
                    (self._watched_elsewhere.add if message["on"] else self._watched_elsewhere.discard)(
                        str(message["s"])
                    )
                elif (call := self._calls.pop(message.get("id", -1), None)) is not None and not call.done():
                    call.set_result(message)
        except (asyncio.IncompleteReadError, ConnectionError, rpc.FrameError):
            if not self._stop.is_set():
                self.availability.down("the supervisor's state link closed")

    async def _call(self, op: str, **args: Any) -> Any:
        if self._writer is None or self._writer.is_closing():
            raise StateUnavailable("no link to the supervisor")
        self._next_id += 1
        call_id = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        self._writer.write(rpc.encode({"id": call_id, "op": op, "args": args}))
        try:
            reply = await asyncio.wait_for(future, CALL_TIMEOUT_S)
        except TimeoutError:
            self.availability.down(f"the supervisor did not answer {op} within {CALL_TIMEOUT_S:g} s")
            raise StateUnavailable(op) from None
        finally:
            self._calls.pop(call_id, None)
        self.availability.up()
        if not reply.get("ok"):
            raise StateUnavailable(str(reply.get("error")))
        return reply["result"]

    async def locked_for(self, address: str) -> float:
        try:
            return float(await self._call("locked_for", a=address))
        except StateUnavailable:
            return self.local.locked_for(address)

    async def failure(self, address: str, limit: int, lockout_s: float) -> bool:
        locked_here = self.local.failure(address, limit, lockout_s)
        try:
            return bool(await self._call("failure", a=address, limit=limit, lockout_s=lockout_s))
        except StateUnavailable:
            return locked_here

    async def open_session(self, session: LiveSession, limit: int) -> bool:
        shared = self._call("open", session=asdict(session), limit=limit)
        return await self.local.admit(session, limit, shared)

    async def close_session(self, session: LiveSession) -> None:
        self.local.close_session(session.session_id)
        with contextlib.suppress(StateUnavailable):
            await self._call("close", s=session.session_id)

    async def sessions(self) -> list[LiveSession]:
        try:
            return [LiveSession(**s) for s in await self._call("sessions")]
        except StateUnavailable:
            return list(self.local.sessions.values())

    def watched(self, session_id: str) -> bool:
        return session_id in self._watched_elsewhere or self.hub.watched(session_id)

    def publish_output(self, session_id: str, chunk: OutputChunk) -> None:
        self.hub.publish(session_id, chunk)
        writer = self._writer
        if session_id in self._watched_elsewhere and writer is not None and not writer.is_closing():
            args = {"s": session_id, "c": chunk.channel, "t": chunk.t, "d": rpc.b64(chunk.data)}
            writer.write(rpc.encode({"op": "publish", "args": args}))

    async def subscribe_output(self, session_id: str) -> AsyncIterator[OutputChunk]:
        if session_id in self.local.sessions:  # this worker's own: no supervisor in between
            async for chunk in self.hub.subscribe(session_id):
                yield chunk
            return
        await self._call("watch", s=session_id, n=1)
        try:
            async for chunk in self.hub.subscribe(session_id):
                yield chunk
        finally:
            with contextlib.suppress(StateUnavailable):
                await self._call("watch", s=session_id, n=-1)

    async def terminate(self, session_id: str, by: str) -> bool:
        if session_id in self.local.sessions:
            return self._on_terminate(session_id, by)
        return bool(await self._call("terminate", s=session_id, by=by))


class _SupervisorRecords:
    """The supervisor's record calls, each within :data:`CALL_TIMEOUT_S`."""

    def __init__(self, worker: WorkerState) -> None:
        self.worker = worker

    async def put_record(self, kind: RecordKind, key: str, doc: dict[str, Any], expires_at: float) -> None:
        await self.worker._call("record_put", kind=kind, key=key, doc=doc, e=expires_at)

    async def record_entry(self, kind: RecordKind, key: str) -> Entry | None:
        found = await self.worker._call("record_get", kind=kind, key=key)
        return (found[0], float(found[1])) if found is not None else None

    async def take_record(self, kind: RecordKind, key: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self.worker._call("record_take", kind=kind, key=key)
        return found

    async def drop_record(self, kind: RecordKind, key: str) -> None:
        await self.worker._call("record_drop", kind=kind, key=key)

    async def claim_record(self, kind: RecordKind, key: str, expires_at: float) -> bool:
        return bool(await self.worker._call("record_claim", kind=kind, key=key, e=expires_at))
