"""Following an sftp channel: packets out of arbitrary chunks, replies paired with requests,
handles with paths, and one event per file operation. Pure: bytes in, dicts out, no I/O.

Two ways to feed client bytes, never both on one tracker:

- observing: ``client_data(chunk)``; file data inside WRITE packets is skipped, never buffered;
- gating: ``client_packets(chunk)`` returns whole packets one by one, tracked only once the
  caller says it forwarded one (``sent``); ``judge`` tells, at that moment, what a packet changes
  and whether the tracker can vouch for it, and ``deny`` answers it instead.

Server bytes always go to ``server_data(chunk)`` (DATA payloads are skipped).

A handle names the file the server will act on only while the tracker knows it as open: from its
OPEN's reply until its CLOSE is sent (sftp-server reuses a freed handle for the next OPEN). A
request names a handle as it was when the request was sent, and a reply is paired with the one
outstanding request of its id (docs/policy.md, "sftp handles").
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sshgate.sftp import protocol as p

Event = dict[str, Any]

_PREFIX = 512
"""Bytes kept of a WRITE or DATA packet: id, handle (at most 256 bytes), offset and length."""

_MAX_PENDING = 4096
_EVENTS = frozenset({"open", "opendir", "close", "read", "write", "remove", "rename", "mkdir", "rmdir",
                     "setstat", "fsetstat", "lsetstat", "symlink", "link"})  # fmt: skip


class Framer:
    """Splits a stream into packets ``(type, body, body_length)``. Bodies of the ``skim`` types are
    cut to their first ``prefix`` bytes and the rest is skipped, so memory stays at one packet."""

    __slots__ = ("_body", "_body_len", "_head", "_keep", "_prefix", "_skim", "_skip", "_type")

    def __init__(self, skim: frozenset[int] = frozenset(), prefix: int = _PREFIX) -> None:
        self._skim = skim
        self._prefix = prefix
        self._head = bytearray()
        self._body = bytearray()
        self._type = -1
        self._body_len = 0
        self._keep = -1  # -1: reading a header
        self._skip = 0

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes, int]]:
        """The packets ``data`` completes, one by one; a bad header raises :class:`SftpProtocolError`
        after the packets before it, so any chunking of a stream yields the same."""
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
            elif self._keep < 0:
                step = min(5 - len(self._head), end - pos)
                self._head += data[pos : pos + step]
                pos += step
                if len(self._head) == 5:
                    self._start_packet()
                    if self._keep == 0:
                        yield self._finish()
            else:
                step = min(self._keep - len(self._body), end - pos)
                self._body += data[pos : pos + step]
                pos += step
                if len(self._body) == self._keep:
                    yield self._finish()

    def _start_packet(self) -> None:
        length, ptype = struct.unpack(">IB", self._head)
        self._head.clear()
        if not 1 <= length <= p.MAX_PACKET:
            raise p.SftpProtocolError(f"packet length {length} out of range")
        self._type, self._body_len = ptype, length - 1
        self._keep = min(self._body_len, self._prefix) if ptype in self._skim else self._body_len

    def _finish(self) -> tuple[int, bytes, int]:
        packet = (self._type, bytes(self._body), self._body_len)
        self._skip = self._body_len - self._keep
        self._body.clear()
        self._keep = -1
        return packet


@dataclass(frozen=True, slots=True)
class ClientPacket:
    """One whole client packet for the gate: forward ``data`` (then ``sent``) or ``deny`` it."""

    data: bytes
    request: p.Request


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a client packet would do if sent now: the ``change`` the policy judges, or why the
    tracker cannot vouch for it (``refusal``: refuse without asking)."""

    change: p.Mutation | None
    refusal: str | None = None


@dataclass(slots=True)
class _Handle:
    path: str
    directory: bool
    read: int = 0
    written: int = 0


@dataclass(frozen=True, slots=True)
class _Sent:
    """An outstanding request and the open handle it named when sent (None: none or unknown)."""

    request: p.Request
    handle: _Handle | None


@dataclass(slots=True)
class SftpTracker:
    """Turns one sftp channel's two byte streams into operation events passed to ``emit``:
    ``{op, path, target, bytes, status}`` (``mode`` on open; ``bytes`` = ``{read, written}`` at
    close of a file handle, else None). A stream that stops making sense yields one ``error``
    event and is followed no further.

    Once ``cwd`` (the server's working directory) is known, paths are shown absolute and
    normalised (:func:`protocol.resolved`)."""

    emit: Callable[[Event], None]
    cwd: str | None = None
    _client: Framer = field(default_factory=lambda: Framer(frozenset({p.WRITE})))
    _server: Framer = field(default_factory=lambda: Framer(frozenset({p.DATA})))
    _whole: Framer = field(default_factory=Framer)
    _pending: dict[int, _Sent] = field(default_factory=dict)
    _handles: dict[bytes, _Handle] = field(default_factory=dict)
    _broken: bool = False
    _failure: str | None = None

    def client_data(self, data: bytes) -> None:
        """Observe client→server bytes."""
        if self._broken:
            return
        try:
            for ptype, body, length in self._client.feed(data):
                self.sent(self._parse(ptype, body, length))
        except p.SftpProtocolError as exc:
            self._fail(f"client: {exc}")

    def server_data(self, data: bytes) -> None:
        """Observe server→client bytes."""
        if self._broken:
            return
        try:
            for ptype, body, length in self._server.feed(data):
                self._reply(p.parse_reply(ptype, body, length))
        except p.SftpProtocolError as exc:
            self._fail(f"server: {exc}")

    def client_packets(self, data: bytes) -> Iterator[ClientPacket]:
        """Gate client→server bytes: the whole packets completed by ``data``, not yet tracked.
        Raises :class:`SftpProtocolError` (close the channel) after the packets before the one
        not understood."""
        for ptype, body, _ in self._whole.feed(data):
            raw = struct.pack(">IB", len(body) + 1, ptype) + body
            yield ClientPacket(raw, self._parse(ptype, body))

    def judge(self, request: p.Request) -> Verdict:
        """``request`` if it were sent now, after everything sent before it. A request whose id
        is outstanding, or naming a handle not known as open, is refused: its reply could not
        be paired, or the file behind the handle is not the one the tracker saw opened."""
        handle = self._handles.get(request.handle) if request.handle is not None else None
        change = p.mutation(request, handle.path if handle else None)
        if request.id is not None and request.id in self._pending:
            return Verdict(change, f"request id {request.id} is already outstanding")
        if request.handle is not None and handle is None:
            return Verdict(change, "the handle is not open, or is closing")
        return Verdict(change)

    def sent(self, request: p.Request) -> None:
        """``request`` went to the server: pair its reply with it, and stop trusting the handle
        a CLOSE names. An id already outstanding makes the stream unfollowable."""
        if request.id is None or self._broken:
            return
        if request.id in self._pending:
            self._fail(f"request id {request.id} reused while outstanding")
            return
        if len(self._pending) >= _MAX_PENDING:
            self._fail(f"more than {_MAX_PENDING} requests unanswered")
            return
        handle = None
        if request.handle is not None:
            handle = (
                self._handles.pop(request.handle, None)
                if request.name == "close"
                else self._handles.get(request.handle)
            )
        self._pending[request.id] = _Sent(request, handle)

    @property
    def failure(self) -> str | None:
        """Why the stream is no longer followed (it stopped making sense, or too many requests
        went unanswered), or None."""
        return self._failure

    def _parse(self, ptype: int, body: bytes, length: int | None = None) -> p.Request:
        request = p.parse_request(ptype, body, length)
        return request if self.cwd is None else p.resolved(request, self.cwd)

    def deny(self, request: p.Request, change: p.Mutation | None, message: str) -> bytes:
        """Record ``request`` as blocked (``change``: what it would have done); returns the
        STATUS packet to send the client instead."""
        if request.id is None:
            raise p.SftpProtocolError("an INIT packet cannot be denied")
        self._event(request.name, change.path if change else request.path,
                    change.target if change else request.target, "blocked", message=message)  # fmt: skip
        return p.status_packet(request.id, message)

    def close(self) -> None:
        """The channel ended: file handles still open get a ``close`` event with status ``unclosed``."""
        closing = [x.handle for x in self._pending.values() if x.request.name == "close"]
        for handle in [*self._handles.values(), *closing]:
            if handle is not None and not handle.directory:
                self._close_event(handle, "unclosed")
        self._handles.clear()
        self._pending.clear()

    def _fail(self, reason: str) -> None:
        if self._broken:  # the first reason is the one that counts
            return
        self._broken, self._failure = True, reason
        self._event("error", None, None, "unparsed", message=reason)

    def _reply(self, reply: p.Reply) -> None:
        sent = self._pending.pop(reply.id, None) if reply.id is not None else None
        if sent is None:
            return
        request, handle, name = sent.request, sent.handle, sent.request.name
        if not (name in _EVENTS or name.startswith("extended:")):
            return
        ok = reply.type != p.STATUS or reply.code == p.FX_OK
        status = "ok" if reply.type != p.STATUS else p.status_name(reply.code)
        if name in ("open", "opendir"):
            if reply.type == p.HANDLE and reply.handle is not None and request.path is not None:
                self._handles[reply.handle] = _Handle(request.path, name == "opendir")
            mode = p.open_mode(request.pflags) if name == "open" else None
            self._event(name, request.path, None, status, mode=mode)
        elif name == "read":
            if handle is not None and reply.type == p.DATA:
                handle.read += reply.length
        elif name == "write":
            if handle is not None and ok:
                handle.written += request.length
        elif name == "close":
            if handle is not None and not handle.directory:
                self._close_event(handle, status)
        elif name == "fsetstat":
            self._event("setstat", handle.path if handle else None, None, status)
        else:
            self._event(name, request.path, request.target, status)

    def _close_event(self, handle: _Handle, status: str) -> None:
        self._event(
            "close", handle.path, None, status, bytes={"read": handle.read, "written": handle.written}
        )

    def _event(self, op: str, path: str | None, target: str | None, status: str, **extra: Any) -> None:
        doc: Event = {"op": op, "path": path, "target": target, "bytes": None, "status": status}
        doc.update((k, v) for k, v in extra.items() if v is not None)
        self.emit(doc)
