"""smux protocol version 1 (xtaci/smux), as carried inside mux-mode port sessions (docs/ssm-protocol.md §8.3).

The frame codec is sans-IO: ``encode_frame`` and ``FrameDecoder.feed``. ``SmuxSession`` is a small
asyncio session over any byte pipe (the SSM data channel): the client opens streams with odd ids
from 3, the server accepts them. There is no per-stream window in v1, so flow control works as in
xtaci: every stream's unread bytes count against one session budget (4 MiB by default) and the
session stops consuming input only when that budget is exhausted; writers send whole frames under
one FIFO lock so a bulk writer cannot starve the others, and a frame once queued is sent whole
even if its writer is cancelled. A FIN ends the stream in both directions
(xtaci returns EOF to writers after a FIN), so there is no half-close.

Public API:
    ``SmuxSession(write, client=..., max_frame=32768, receive_budget=4 MiB, keepalive=None)``
        ``await feed(data)`` -- bytes received from the peer (awaits when the budget is spent);
        ``await open_stream() -> SmuxStream`` (client) / ``await accept() -> SmuxStream`` (server);
        ``close(exc=None)`` -- end every stream.
    ``SmuxStream``: ``id``, ``await read(n=-1) -> bytes`` (b"" at EOF), ``await write(data)``,
        ``await close()`` (sends FIN once), ``fail(exc)`` (make pending and future reads raise).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum

VERSION = 1
HEADER = struct.Struct("<BBHI")
MAX_FRAME = 32768
RECEIVE_BUDGET = 4 * 1024 * 1024
FIRST_CLIENT_STREAM = 3


class Cmd(IntEnum):
    SYN = 0
    FIN = 1
    PSH = 2
    NOP = 3


class SmuxError(Exception):
    """Protocol violation: the session cannot continue."""


class StreamClosed(ConnectionError):
    """The stream (or its session) is closed for writing."""


@dataclass(frozen=True, slots=True)
class Frame:
    cmd: int
    stream_id: int
    data: bytes = b""


def encode_frame(cmd: Cmd, stream_id: int, data: bytes = b"") -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError(f"smux frame payload of {len(data)} bytes exceeds 65535")
    return HEADER.pack(VERSION, cmd, len(data), stream_id) + data


class FrameDecoder:
    """Reassembles frames from an arbitrarily split byte stream."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos = 0
        size = HEADER.size
        while len(buf) - pos >= size:
            ver, cmd, length, sid = HEADER.unpack_from(buf, pos)
            if ver != VERSION:
                raise SmuxError(f"smux version {ver} is not 1")
            if cmd > Cmd.NOP:
                raise SmuxError(f"smux command {cmd} is not valid in version 1")
            end = pos + size + length
            if end > len(buf):
                break
            frames.append(Frame(cmd, sid, bytes(buf[pos + size : end])))
            pos = end
        del buf[:pos]
        return frames


class SmuxStream:
    def __init__(self, session: SmuxSession, stream_id: int) -> None:
        self.id = stream_id
        self._session = session
        self._chunks: deque[bytes] = deque()
        self._readable = asyncio.Event()
        self._eof = False
        self._error: BaseException | None = None
        self._fin_sent = False
        self.bytes_received = 0

    def __repr__(self) -> str:
        return f"<SmuxStream {self.id}>"

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all buffered if n < 0); b"" once the peer's FIN is reached."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        if n < 0:
            data = b"".join(self._chunks)
            self._chunks.clear()
        else:
            data = self._chunks.popleft()
            if len(data) > n:
                self._chunks.appendleft(data[n:])
                data = data[:n]
        self._session._consumed(len(data))
        return data

    async def write(self, data: bytes) -> None:
        if self._fin_sent or self._eof or self._error is not None:
            raise StreamClosed(f"smux stream {self.id} is closed")
        await self._session._send_data(self.id, data)

    async def close(self) -> None:
        """Send FIN once and forget the stream (xtaci semantics: no half-close)."""
        if self._fin_sent:
            return
        self._fin_sent = True
        self._session._forget(self)
        if not self._session.closed:
            with contextlib.suppress(Exception):
                await self._session._send_frame(encode_frame(Cmd.FIN, self.id))
        self._drop_buffer()

    def fail(self, exc: BaseException) -> None:
        """Make reads raise ``exc`` (e.g. the agent's ConnectToPortError)."""
        self._error = exc
        self._readable.set()

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    def _push(self, data: bytes) -> None:
        self._chunks.append(data)
        self.bytes_received += len(data)
        self._readable.set()

    def _peer_fin(self) -> None:
        self._eof = True
        self._readable.set()

    def _drop_buffer(self) -> None:
        pending = sum(map(len, self._chunks))
        self._chunks.clear()
        self._session._consumed(pending)


class SmuxSession:
    def __init__(
        self,
        write: Callable[[bytes], Awaitable[None]],
        *,
        client: bool,
        max_frame: int = MAX_FRAME,
        receive_budget: int = RECEIVE_BUDGET,
        keepalive: tuple[float, float] | None = None,
        on_peer_fin: Callable[[SmuxStream], None] | None = None,
    ) -> None:
        self._write = write
        self._client = client
        self._max_frame = max_frame
        self._budget = receive_budget
        self._buffered = 0
        self._space = asyncio.Event()
        self._space.set()
        self._decoder = FrameDecoder()
        self._streams: dict[int, SmuxStream] = {}
        self._next_id = FIRST_CLIENT_STREAM if client else 2
        self._accept: asyncio.Queue[SmuxStream | None] = asyncio.Queue()
        self._write_lock = asyncio.Lock()
        self._on_peer_fin = on_peer_fin
        self.closed = False
        self.close_error: BaseException | None = None
        self._received_since_check = False
        self._keepalive_task = (
            asyncio.get_running_loop().create_task(self._keepalive(*keepalive)) if keepalive else None
        )

    @property
    def streams(self) -> dict[int, SmuxStream]:
        return self._streams

    async def feed(self, data: bytes) -> None:
        """Consume peer bytes; waits while the unread-data budget is exhausted."""
        if self.closed:
            return
        self._received_since_check = True
        try:
            frames = self._decoder.feed(data)
        except SmuxError as exc:
            self.close(exc)
            raise
        for frame in frames:
            await self._dispatch(frame)

    async def _dispatch(self, frame: Frame) -> None:
        cmd, sid = frame.cmd, frame.stream_id
        if cmd == Cmd.PSH:
            stream = self._streams.get(sid)
            if stream is None or not frame.data:
                return
            while self._buffered >= self._budget and not self.closed:
                self._space.clear()
                await self._space.wait()
            self._buffered += len(frame.data)
            stream._push(frame.data)
        elif cmd == Cmd.SYN:
            if sid not in self._streams and not self._client:
                stream = SmuxStream(self, sid)
                self._streams[sid] = stream
                self._accept.put_nowait(stream)
        elif cmd == Cmd.FIN:
            stream = self._streams.get(sid)
            if stream is not None:
                stream._peer_fin()
                if self._on_peer_fin is not None:
                    self._on_peer_fin(stream)

    async def open_stream(self) -> SmuxStream:
        if self.closed:
            raise StreamClosed("smux session is closed")
        sid = self._next_id
        self._next_id += 2
        stream = SmuxStream(self, sid)
        self._streams[sid] = stream
        await self._send_frame(encode_frame(Cmd.SYN, sid))
        return stream

    async def accept(self) -> SmuxStream:
        stream = await self._accept.get()
        if stream is None:
            self._accept.put_nowait(None)
            raise StreamClosed("smux session is closed")
        return stream

    def close(self, exc: BaseException | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_error = exc
        for stream in list(self._streams.values()):
            if exc is not None:
                stream.fail(exc)
            stream._peer_fin()
        self._streams.clear()
        self._accept.put_nowait(None)
        self._space.set()
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()

    async def _send_data(self, sid: int, data: bytes) -> None:
        step = self._max_frame
        for pos in range(0, len(data), step):
            await self._send_frame(encode_frame(Cmd.PSH, sid, data[pos : pos + step]))

    async def _send_frame(self, frame: bytes) -> None:
        """Send one whole frame, even if the caller is cancelled meanwhile.

        The pipe may take a frame in pieces (the SSM data channel sends 1 KiB messages): a frame
        cut short would make the peer read the next frame's header as payload, and every stream
        of the session would be lost to one cancelled writer (an abandoned port forward).
        """
        if self.closed:
            raise StreamClosed("smux session is closed")
        await asyncio.shield(self._write_whole(frame))

    async def _write_whole(self, frame: bytes) -> None:
        async with self._write_lock:
            await self._write(frame)

    def _consumed(self, n: int) -> None:
        self._buffered -= n
        if self._buffered < self._budget:
            self._space.set()

    def _forget(self, stream: SmuxStream) -> None:
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]

    async def _keepalive(self, interval: float, timeout: float) -> None:
        """xtaci's keep-alive: NOP every ``interval``; close if nothing arrived for ``timeout``."""
        quiet = 0.0
        while not self.closed:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await self._send_frame(encode_frame(Cmd.NOP, 0))
            quiet = 0.0 if self._received_since_check else quiet + interval
            self._received_since_check = False
            if quiet >= timeout:
                self.close(TimeoutError("smux keep-alive timeout"))
