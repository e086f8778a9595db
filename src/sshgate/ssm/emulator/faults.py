"""The emulator's fault switch: lossy, reordering and breaking websockets for resilience tests.

``Faults`` is a mutable setting shared by every session of an emulator; ``FaultyLink`` applies it
to one websocket: it may drop outgoing or incoming messages (acks included), drop only acks, hold a
message back so it goes out after the next one, delay messages, or abort the socket after a given
number of messages have crossed it, or ignore a port session's TerminateSession flag
(``ignore_terminate_flag``: only the TerminateSession API ends it then). ``start_delay`` holds
each session's process or TCP dial back, like a slow agent host, so input meets the agent's
"handler not ready". A seeded RNG keeps runs reproducible.

``tamper`` makes the agent hostile: every message it sends of that kind (a message type such as
``acknowledge`` or ``channel_closed``, or the payload type of its stream data such as
``handshake_request``, ``handshake_complete``, ``exit_code``, ``output``) goes out in a well-formed
frame (right digest, same sequence number) around ``tamper_payload`` instead of its own payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sshgate.ssm.codec import PayloadType, decode, encode

ACK_MARK = b"acknowledge"
SETTINGS = frozenset(
    {
        "drop_rate",
        "drop_ack_rate",
        "reorder_rate",
        "delay",
        "drop_socket_after",
        "start_delay",
        "seed",
        "tamper",
        "tamper_payload",
        "ignore_terminate_flag",
    }
)


@dataclass
class Faults:
    drop_rate: float = 0.0
    drop_ack_rate: float = 0.0
    reorder_rate: float = 0.0
    delay: float = 0.0
    drop_socket_after: int | None = None
    start_delay: float = 0.0
    seed: int = 0
    tamper: str | None = None
    tamper_payload: str = ""
    ignore_terminate_flag: bool = False
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def reset(self) -> None:
        self.drop_rate = self.drop_ack_rate = self.reorder_rate = self.delay = self.start_delay = 0.0
        self.drop_socket_after = self.tamper = None
        self.tamper_payload = ""
        self.ignore_terminate_flag = False

    def configure(self, **settings: float | int | str | bool | None) -> None:
        for key, value in settings.items():
            if key not in SETTINGS:
                raise ValueError(f"unknown fault setting {key}")
            setattr(self, key, value)
        self.rng.seed(self.seed)

    def tampered(self, raw: bytes) -> bytes:
        """``raw``, or the hostile frame that replaces it (see the module docstring)."""
        if self.tamper is None:
            return raw
        message = decode(raw, verify_digest=False)
        kind = message.message_type
        if kind.endswith("_stream_data"):
            with contextlib.suppress(ValueError):
                kind = PayloadType(message.payload_type).name.lower()
        if kind != self.tamper:
            return raw
        message.payload, message.payload_digest = self.tamper_payload.encode(), b""
        return encode(message)


class FaultyLink:
    """Applies ``Faults`` to one socket's traffic in both directions."""

    def __init__(
        self,
        faults: Faults,
        send: Callable[[bytes], Coroutine[Any, Any, None]],
        abort: Callable[[], None],
        post: Callable[[bytes], None] | None = None,
    ) -> None:
        self._faults = faults
        self._send = send
        self._abort = abort
        self._post = post
        self._held: bytes | None = None
        self._count = 0
        self._late: set[asyncio.Task[None]] = set()

    def _lost(self, raw: bytes) -> bool:
        f = self._faults
        if f.drop_rate and f.rng.random() < f.drop_rate:
            return True
        return bool(f.drop_ack_rate) and raw[4:15] == ACK_MARK and f.rng.random() < f.drop_ack_rate

    def _tick(self) -> bool:
        """Count a message; True once the socket should break."""
        self._count += 1
        limit = self._faults.drop_socket_after
        if limit is not None and self._count >= limit:
            self._faults.drop_socket_after = None
            self._abort()
            return True
        return False

    def incoming(self, raw: bytes) -> bool:
        """Whether a received message survives."""
        if self._tick():
            return False
        return not self._lost(raw)

    async def send(self, raw: bytes) -> None:
        f = self._faults
        if self._tick() or self._lost(raw):
            return
        raw = f.tampered(raw)
        if f.delay:
            await asyncio.sleep(f.delay)
        if self._held is None and f.reorder_rate and f.rng.random() < f.reorder_rate:
            self._held = raw
            asyncio.get_running_loop().call_later(0.05, self._release_held)
            return
        await self._send(raw)
        if self._held is not None:
            held, self._held = self._held, None
            await self._send(held)

    def post(self, raw: bytes) -> None:
        """``send`` without waiting, for acks (``websocket_post``): the frame is written at once
        unless a delay or reordering is set, which hold frames back; then it takes ``send``'s
        path in a task of its own."""
        f = self._faults
        if self._post is None or f.delay or f.reorder_rate:
            self._spawn(self.send(raw))
        elif not (self._tick() or self._lost(raw)):
            self._post(f.tampered(raw))

    def _release_held(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._spawn(self._send(held))

    def _spawn(self, send: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(send)
        self._late.add(task)
        task.add_done_callback(self._late_done)

    def _late_done(self, task: asyncio.Task[None]) -> None:
        self._late.discard(task)
        if not task.cancelled():
            task.exception()  # a send on a dead socket is just another lost message
