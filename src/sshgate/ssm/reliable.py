"""The data channel's reliability layer (docs/ssm-protocol.md §6), shared by client and emulator agent.

Sans-IO parts: ``RttEstimator`` (the RTO rules of §6.4), ``OutgoingBuffer`` (unacked messages,
oldest-first retransmission) and ``IncomingBuffer`` (out-of-order messages). ``DataChannel`` wires
them to a swappable transport (one websocket at a time, so a resumed socket keeps the sequence
state): it numbers outgoing stream messages from 0, acks every accepted incoming one, re-acks
duplicates, buffers out-of-order input, retransmits the oldest unacked message after RTO (checked
every 100 ms while anything is unacked; an idle channel has no timer) and bounds both buffers.
Backpressure: ``send`` waits while the outgoing buffer is full, and an owner whose ``deliver``
callback returns False leaves the message unacked and uncounted ("handler not ready"), so the
peer retransmits it later.

Public API:
    ``ChannelConfig`` with the two presets ``CLIENT`` and ``AGENT``.
    ``DataChannel(config, deliver=..., on_control=..., on_failure=None, on_malformed=None)``
        (``on_malformed(what, error)``: an acknowledge whose payload the codec refuses; without
        it such acks are dropped, as AWS's agent and plugin drop them):
        ``attach(transport, post=None, writable=None)`` / ``detach()`` (``post`` writes an ack
        without waiting; ``writable`` says whether the socket takes a frame without draining),
        ``feed(raw)`` for each received frame (no await: it may run in the socket's receive
        callback),
        ``await send(payload_type, payload)``, ``await send_data(data, payload_type)`` (≤1024-byte
        chunks), ``can_send_now(count)`` and ``send_now(payload_type, payloads) -> bool`` (messages
        sent without waiting, when nothing needs waiting for), ``await send_control(raw)``, ``redeliver()``,
        ``await wait_drained(timeout)``, ``start()`` / ``close()``; counters ``retransmits``,
        ``dropped``, ``duplicates``, ``out_of_order``.
    ``Inbox(limit, on_space)`` -- the bounded hand-off from ``deliver`` to a consumer task
        (``get()`` one message, ``get_many(max_bytes)`` all that waits), or straight to its
        ``sink`` while nothing waits.
    ``websocket_transport(ws)`` -- the transport both sides use over an aiohttp websocket;
    ``websocket_post(ws)`` -- its non-waiting form for acks (None when aiohttp lacks the hook);
    ``websocket_writable(ws)`` -- whether a frame written now needs no wait for the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from sshgate.ssm.codec import (
    Acknowledge,
    ClientMessage,
    CodecError,
    HeaderFlag,
    MessageType,
    PayloadType,
    decode,
    encode,
    encode_ack,
)

RESEND_INTERVAL = 0.1
INITIAL_RTO = 0.2
MAX_RTO = 1.0
MIN_RTO_MARGIN = 0.01
MAX_RESENDS = 3000
CHUNK_SIZE = 1024
INCOMING_BYTES = 32 * 1024 * 1024  # out-of-order payload bytes held per channel

Transport = Callable[[bytes], Awaitable[None]]
Post = Callable[[bytes], None]


class WebSocket(Protocol):
    """What ``websocket_transport`` needs of an aiohttp client or server websocket."""

    @property
    def closed(self) -> bool: ...

    async def send_bytes(self, data: bytes) -> None: ...


class CoalescingTransport:
    """An asyncio transport that writes a frame at once when the socket was idle, and the frames
    of a busy stream's event-loop turn together when the turn is over.

    Every stream message costs an ack the other way, each its own websocket frame; a burst of
    1 KiB messages read in one turn made one ``send()`` per ack: now one per turn while frames
    keep coming. A lone frame (a keystroke, its echo, their acks) leaves without waiting for the
    turn to end: holding it one more loop turn cost each echoed keystroke 30-50 µs. Same bytes,
    same order. ``close`` sends what is pending first; ``abort`` drops it.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._pending: list[bytes | bytearray] = []
        self._busy = False  # a frame was written in this turn or the one before
        # Looked up once: asyncio.get_running_loop() costs a getpid() system call on Python 3.11.
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes | bytearray) -> None:
        if self._busy:
            self._pending.append(data)
            return
        self._busy = True
        self._loop.call_soon(self._end_turn)
        if not self._transport.is_closing():
            self._transport.write(data)

    def _end_turn(self) -> None:
        if self._pending:
            self._flush()
            self._loop.call_soon(self._end_turn)
        else:
            self._busy = False

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def is_closing(self) -> bool:
        return bool(self._transport.is_closing())  # asked before every frame: no __getattr__ detour

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def coalesce_writes(ws: object) -> None:
    """Give an aiohttp websocket (client or server) a :class:`CoalescingTransport`."""
    writer = getattr(ws, "_writer", None)  # aiohttp's WebSocketWriter: frames go to .transport
    transport = getattr(writer, "transport", None)
    if transport is not None and not isinstance(transport, CoalescingTransport):
        writer.transport = CoalescingTransport(transport)  # type: ignore[union-attr]


def websocket_transport(ws: WebSocket) -> Callable[[bytes], Coroutine[Any, Any, None]]:
    """Send each frame as a binary message on ``ws``, immune to aiohttp's shared drain future,
    a busy stream's frames of one event-loop turn in one write (:class:`CoalescingTransport`).

    While the socket is paused, aiohttp's senders all wait on one future, and a sender cancelled
    there cancels it for every other (aio-libs/aiohttp#6028): a port stream's sender, cancelled
    when its stream is abandoned, made the next stream's sender fail with CancelledError, so the
    agent closed that stream at once. The frame is written before the wait, so a CancelledError
    this task was not asked for means "sent".
    """

    coalesce_writes(ws)

    async def send(raw: bytes) -> None:
        if ws.closed:
            raise ConnectionResetError("websocket closed")
        try:
            await ws.send_bytes(raw)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise

    return send


def websocket_post(ws: WebSocket) -> Post | None:
    """Write one binary frame at once, never waiting for the socket to drain: for acks.

    Every 1 KiB message received costs an ack; through ``send_bytes`` each ack was three
    coroutines deep. An ack is small and there is one per message taken in, which the reader
    already bounds, so it needs no flow control of its own; the next data frame drains. Uses
    aiohttp's frame writer (``_write_websocket_frame``, not public): None when it is missing or
    the socket compresses, and the caller awaits the transport instead.
    """
    writer: Any = getattr(ws, "_writer", None)
    write_frame = getattr(writer, "_write_websocket_frame", None)
    if write_frame is None or getattr(writer, "compress", True):
        return None

    def post(raw: bytes) -> None:
        if ws.closed:
            raise ConnectionResetError("websocket closed")
        write_frame(raw, aiohttp.WSMsgType.BINARY, 0)

    return post


def websocket_writable(ws: object) -> bool:
    """Whether a frame written now leaves without ``send_bytes`` having to wait for the socket to
    drain (aiohttp's protocol is not paused for writing): ``DataChannel.send_now``'s precondition."""
    protocol = getattr(getattr(ws, "_writer", None), "protocol", None)
    return protocol is not None and not getattr(protocol, "writing_paused", True)


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    send_type: MessageType
    receive_type: MessageType
    syn_on_first: bool
    verify_digest: bool
    outgoing_capacity: int
    incoming_capacity: int
    honor_pause: bool


CLIENT = ChannelConfig(
    MessageType.INPUT_STREAM_DATA, MessageType.OUTPUT_STREAM_DATA, False, True, 10_000, 10_000, False
)
AGENT = ChannelConfig(
    MessageType.OUTPUT_STREAM_DATA, MessageType.INPUT_STREAM_DATA, True, False, 100_000, 100_000, True
)


class RttEstimator:
    """SRTT/RTTVAR/RTO exactly as both AWS sides compute them."""

    def __init__(self) -> None:
        self.srtt = 0.1
        self.rttvar = 0.0
        self.rto = INITIAL_RTO

    def sample(self, rtt: float) -> None:
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
        self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = min(MAX_RTO, self.srtt + max(MIN_RTO_MARGIN, 4 * self.rttvar))


@dataclass(slots=True)
class _Pending:
    raw: bytes
    last_sent: float
    sent: bool
    resends: int = 0


class OutgoingBuffer:
    """Unacked stream messages by sequence number, oldest first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[int, _Pending] = OrderedDict()
        self.rtt = RttEstimator()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self.capacity

    def add(self, seq: int, raw: bytes, now: float, *, sent: bool) -> None:
        self._items[seq] = _Pending(raw, now, sent)

    def ack(self, seq: int, now: float) -> bool:
        item = self._items.pop(seq, None)
        if item is None:
            return False
        if item.sent:
            self.rtt.sample(now - item.last_sent)
        return True

    def due(self, now: float) -> tuple[bytes, int] | None:
        """The oldest unacked message if its RTO has elapsed (its send time is then reset)."""
        for item in self._items.values():
            if not item.sent or now - item.last_sent <= self.rtt.rto:
                return None
            item.last_sent = now
            item.resends += 1
            return item.raw, item.resends
        return None

    def take_all(self, now: float) -> list[bytes]:
        """Every unacked message in order, marked as sent now (used when a transport (re)attaches)."""
        out = []
        for item in self._items.values():
            item.last_sent = now
            item.sent = True
            out.append(item.raw)
        return out

    def take_unsent(self, now: float) -> list[bytes]:
        out = []
        for item in self._items.values():
            if not item.sent:
                item.last_sent = now
                item.sent = True
                out.append(item.raw)
        return out


class IncomingBuffer:
    """Out-of-order stream messages waiting for the gap before them to fill, bounded in count and
    in payload bytes (a hostile peer's far-ahead messages must not fill memory)."""

    def __init__(self, capacity: int, byte_capacity: int = INCOMING_BYTES) -> None:
        self.capacity = capacity
        self.byte_capacity = byte_capacity
        self.expected = 0
        self._items: dict[int, ClientMessage] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def store(self, message: ClientMessage) -> bool:
        if len(self._items) >= self.capacity or self._bytes >= self.byte_capacity:
            return False
        if message.sequence_number not in self._items:
            self._items[message.sequence_number] = message
            self._bytes += len(message.payload)
        return True

    def pop_expected(self) -> ClientMessage | None:
        message = self._items.pop(self.expected, None)
        if message is not None:
            self._bytes -= len(message.payload)
        return message

    def put_back(self, message: ClientMessage) -> None:
        self._items[message.sequence_number] = message
        self._bytes += len(message.payload)


class ChannelFailed(ConnectionError):
    """The peer stopped acknowledging: the oldest message was resent too many times."""


class DataChannel:
    def __init__(
        self,
        config: ChannelConfig,
        *,
        deliver: Callable[[ClientMessage], bool],
        on_control: Callable[[ClientMessage], None],
        on_failure: Callable[[BaseException], None] | None = None,
        on_malformed: Callable[[str, CodecError], None] | None = None,
    ) -> None:
        self.config = config
        self._deliver = deliver
        self._on_control = on_control
        self._on_failure = on_failure
        self._on_malformed = on_malformed
        self.outgoing = OutgoingBuffer(config.outgoing_capacity)
        self.incoming = IncomingBuffer(config.incoming_capacity)
        self._next_seq = 0
        self._transport: Transport | None = None
        self._post: Post | None = None
        self._writable: Callable[[], bool] | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._drained = asyncio.Event()
        self._drained.set()
        self._unacked = asyncio.Event()  # set by send; the resend loop clears it when all is acked
        self._paused = False
        self._resender: asyncio.Task[None] | None = None
        self._acking: set[asyncio.Task[bool]] = set()  # acks sent without ``post``
        self.closed = False
        self.retransmits = 0
        self.dropped = 0
        self.duplicates = 0
        self.out_of_order = 0

    # -- transport -----------------------------------------------------------------------------
    @property
    def attached(self) -> bool:
        return self._transport is not None

    async def attach(
        self, transport: Transport, post: Post | None = None, writable: Callable[[], bool] | None = None
    ) -> None:
        """Use a new socket and resend everything unacked on it at once (a resume loses in-flight data).

        ``post``, when given, writes an ack on the same socket without waiting (``websocket_post``);
        ``writable`` says whether a frame written now needs no wait for the socket to drain
        (``websocket_writable``): without both, ``send_now`` always declines.
        """
        self._transport = transport
        self._post = post
        self._writable = writable
        for raw in self.outgoing.take_all(time.monotonic()):
            if not await self._transmit(raw):
                return

    def detach(self) -> None:
        self._transport = self._post = self._writable = None

    async def _transmit(self, raw: bytes) -> bool:
        transport = self._transport
        if transport is None:
            return False
        try:
            await transport(raw)
        except (ConnectionError, RuntimeError, OSError):
            if self._transport is transport:
                self._transport = self._post = None
            return False
        return True

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._resender is None:
            self._resender = asyncio.get_running_loop().create_task(self._resend_loop())

    def close(self) -> None:
        """Stop for good; buffered messages are released."""
        self.closed = True
        self._transport = self._post = None
        self.outgoing = OutgoingBuffer(0)
        self.incoming = IncomingBuffer(0)
        self._room.set()
        self._drained.set()
        self._unacked.set()
        if self._resender is not None:
            self._resender.cancel()

    async def _resend_loop(self) -> None:
        """Every ``RESEND_INTERVAL`` while anything is unacked, resend the oldest message once
        its RTO has passed. A channel with nothing in flight sets no timer: an idle session
        costs no wake-ups (it cost ten a second, on each side)."""
        while not self.closed:
            if not len(self.outgoing):
                self._unacked.clear()
                await self._unacked.wait()
            await asyncio.sleep(RESEND_INTERVAL)
            if self._paused or self._transport is None:
                continue
            due = self.outgoing.due(time.monotonic())
            if due is None:
                continue
            raw, resends = due
            if resends > MAX_RESENDS:
                if self._on_failure is not None:
                    self._on_failure(ChannelFailed(f"message resent {MAX_RESENDS} times without an ack"))
                return
            self.retransmits += 1
            await self._transmit(raw)

    # -- receiving -----------------------------------------------------------------------------
    def feed(self, raw: bytes) -> None:
        """Take one received frame in this call; its ack is written through ``post``."""
        try:
            message = decode(raw, verify_digest=self.config.verify_digest)
        except CodecError:
            self.dropped += 1
            return
        mtype = message.message_type
        if mtype == self.config.receive_type:  # first: one per KiB of the transfer
            if self._paused:
                self._unpause()
            self._receive_stream(message)
        elif mtype == MessageType.ACKNOWLEDGE:
            if self._paused:
                self._unpause()
            try:
                ack = Acknowledge.from_json(message.payload)
            except CodecError as exc:
                self.dropped += 1
                if self._on_malformed is not None:
                    self._on_malformed("acknowledge", exc)
                return
            if self.outgoing.ack(ack.sequence_number, time.monotonic()):
                if not self.outgoing.full:
                    self._room.set()
                if not len(self.outgoing):
                    self._drained.set()
        elif mtype == MessageType.PAUSE_PUBLICATION:
            if self.config.honor_pause:
                self._paused = True
        elif mtype == MessageType.START_PUBLICATION:
            if self._paused:
                self._unpause()
        else:
            self._on_control(message)

    def _receive_stream(self, message: ClientMessage) -> None:
        seq = message.sequence_number
        incoming = self.incoming
        if seq == incoming.expected:
            if not self._deliver(message):
                return
            incoming.expected += 1
            self._ack(message)  # after the delivery: the owner's output leaves first
            self.redeliver()
        elif seq > incoming.expected:
            if incoming.store(message):
                self.out_of_order += 1
                self._ack(message)
        else:
            self.duplicates += 1
            self._ack(message)

    def redeliver(self) -> None:
        """Deliver buffered messages that became in-order (call when the owner is ready again)."""
        incoming = self.incoming
        while (message := incoming.pop_expected()) is not None:
            if not self._deliver(message):
                incoming.put_back(message)
                return
            incoming.expected += 1

    def _ack(self, message: ClientMessage) -> None:
        post = self._post
        if post is None:  # a transport that can only be awaited: the ack goes in a task
            task = asyncio.get_running_loop().create_task(self._transmit(encode_ack(message)))
            self._acking.add(task)
            task.add_done_callback(self._acking.discard)
            return
        try:
            post(encode_ack(message))
        except (ConnectionError, RuntimeError, OSError):
            self._transport = self._post = None

    def _unpause(self) -> None:
        """Publication resumed: send what was held back while paused."""
        self._paused = False
        asyncio.get_running_loop().create_task(self._flush_unsent())

    async def _flush_unsent(self) -> None:
        for raw in self.outgoing.take_unsent(time.monotonic()):
            await self._transmit(raw)

    # -- sending -------------------------------------------------------------------------------
    async def send(self, payload_type: int, payload: bytes) -> None:
        """Send one sequenced stream message, waiting while the outgoing buffer is full."""
        while self.outgoing.full and not self.closed:
            self._room.clear()
            await self._room.wait()
        if self.closed:
            raise ConnectionError("data channel is closed")
        raw = self._number(payload_type, payload)
        live = self._transport is not None and not self._paused
        self.outgoing.add(self._next_seq - 1, raw, time.monotonic(), sent=live)
        self._drained.clear()
        self._unacked.set()
        if live:
            await self._transmit(raw)

    def can_send_now(self, chunks: int) -> bool:
        """Whether ``send_now`` would send ``chunks`` messages: a live, unpaused socket that takes
        a frame without waiting to drain, with ``post``, and room in the outgoing buffer."""
        writable = self._writable
        return (
            self._post is not None
            and writable is not None
            and not self._paused
            and len(self.outgoing) + chunks <= self.outgoing.capacity
            and writable()
        )

    def send_now(self, payload_type: int, payloads: list[bytes]) -> bool:
        """Send ``payloads``, one sequenced message each, in this call if nothing has to be
        waited for (``can_send_now``), else none of them (False: use ``send``). A keystroke sent
        this way leaves in the SSH data callback that brought it, without a task hop."""
        if not self.can_send_now(len(payloads)):
            return False
        now = time.monotonic()
        for payload in payloads:
            raw = self._number(payload_type, payload)
            post = self._post
            self.outgoing.add(self._next_seq - 1, raw, now, sent=post is not None)
            if post is not None:
                try:
                    post(raw)
                except (ConnectionError, RuntimeError, OSError):
                    self._transport = self._post = None  # resent from the buffer on the next socket
        if payloads:
            self._drained.clear()
            self._unacked.set()
        return True

    def _number(self, payload_type: int, payload: bytes) -> bytes:
        """The next sequenced stream message, encoded."""
        seq = self._next_seq
        self._next_seq += 1
        flags = HeaderFlag.SYN if seq == 0 and self.config.syn_on_first else 0
        return encode(ClientMessage(self.config.send_type, seq, payload_type, payload, flags=flags))

    async def send_data(self, data: bytes, payload_type: int = PayloadType.OUTPUT) -> None:
        for pos in range(0, len(data), CHUNK_SIZE):
            await self.send(payload_type, data[pos : pos + CHUNK_SIZE])

    async def send_control(self, raw: bytes) -> None:
        """An encoded unsequenced message (channel_closed, publication): sent once, never buffered."""
        await self._transmit(raw)

    async def wait_drained(self, timeout: float) -> bool:
        """Wait until every sent message is acked; False on timeout."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout)
        return not len(self.outgoing)


# What a queued message counts at least (the message object and its deque slot cost about 330
# bytes): empty or 1-byte messages from a hostile agent cannot queue without end, while a full
# 1 KiB stream message counts its payload only, so the inbox holds as much data as before.
MESSAGE_COST = 256


def _counted(message: ClientMessage) -> int:
    return max(len(message.payload), MESSAGE_COST)


class Inbox:
    """Bounded queue between ``DataChannel.deliver`` and a consumer task.

    ``offer`` refuses (so the message stays unacked) once ``limit`` bytes are waiting (payloads,
    each counted as at least ``MESSAGE_COST``);
    when the consumer makes room again ``on_space`` runs, typically ``DataChannel.redeliver``.
    A consumer that can take a message at once sets ``sink``: while nothing waits, ``offer``
    hands the message to it in the same call (the websocket's receive callback) instead of
    waking a task; a sink returning False (its consumer is paused) leaves the message queued,
    and so the ones after it, for ``get_many``.
    """

    sink: Callable[[ClientMessage], bool] | None = None

    def __init__(self, limit: int, on_space: Callable[[], None]) -> None:
        self.limit = limit
        self._on_space = on_space
        self._items: deque[ClientMessage] = deque()
        self._size = 0
        self._blocked = False
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.closed = False

    def offer(self, message: ClientMessage) -> bool:
        if self.closed:
            return True
        if self._size >= self.limit:
            self._blocked = True
            return False
        if not self._items and self.sink is not None and self.sink(message):
            return True
        self._items.append(message)
        self._size += _counted(message)
        if self._size >= self.limit:
            self._room.clear()
        self._ready.set()
        return True

    @property
    def full(self) -> bool:
        return not self._room.is_set()

    @property
    def empty(self) -> bool:
        """Nothing waits to be taken (what was taken may still be in the consumer's hands)."""
        return not self._items

    async def room(self) -> None:
        """Wait while full. A reader that waits here before taking the next frame holds the peer
        back through TCP, as the plugin's blocking stdout does; refusing messages instead leaves
        them to retransmission, which resends only the oldest unacked one per RTO, so a long
        refusal stalls the stream for minutes."""
        while not self._room.is_set() and not self.closed:
            await self._room.wait()

    async def get(self) -> ClientMessage | None:
        """The next message, or None once closed and empty."""
        batch = await self.get_many(1)
        return batch[0] if batch else None

    async def get_many(self, max_bytes: int) -> list[ClientMessage]:
        """Every waiting message up to about ``max_bytes`` of payload (at least one; none once
        closed and empty): a reader that takes what has arrived in one go writes it downstream
        in one go, not 1 KiB at a time."""
        while not self._items:
            if self.closed:
                return []
            self._ready.clear()
            await self._ready.wait()
        items, taken, size, counted = self._items, [], 0, 0
        while items and size < max_bytes:
            message = items.popleft()
            size += len(message.payload)
            counted += _counted(message)
            taken.append(message)
        self._size -= counted
        if self._size < self.limit:
            self._room.set()
        if self._blocked and self._size < self.limit:
            self._blocked = False
            # What comes back now queues behind the batch being taken: the sink must not pass it.
            sink, self.sink = self.sink, None
            try:
                self._on_space()
            finally:
                self.sink = sink
        return taken

    def close(self) -> None:
        self.closed = True
        self._ready.set()
        self._room.set()
