"""aiohttp websockets whose binary messages are taken in the socket's receive callback.

aiohttp parses frames in its protocol's ``data_received`` and queues each message for
``receive()``, which a task awaits: every message of the data channel (a keystroke's echo, the
ack of the keystroke) cost a task wake-up before the data channel saw it. :func:`take_directly`
(a client websocket) and :class:`DirectWebSocketResponse` (a server one, for the emulator) put a
queue of aiohttp's own kind in place whose binary messages go to a ``take`` callback at once.
Framing, masking rules, fragmentation, control frames and the message size limit stay aiohttp's
(its parser is kept, only its destination changes), so a hostile or broken peer meets the same
checks and errors as before. Whatever ``take`` declines, and every other message (text, close,
ping, errors), is queued for ``receive()`` as before, and once one message is queued the ones
after it are too, so the reader that awaits ``receive()`` keeps the order and the backpressure:
a queue over aiohttp's limit pauses the socket.

This reaches into aiohttp's private reader module (tested on 3.14): when anything it needs is
missing, nothing is changed and every message goes through the queue as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

_reader: Any
try:
    from aiohttp._websocket import reader as _reader
except ImportError:  # pragma: no cover - another aiohttp layout: messages keep going through the queue
    _reader = None

QUEUE_LIMIT = 2**16  # aiohttp's own (DEFAULT_CHUNK_SIZE): the queue pauses the socket at twice this
_BINARY = aiohttp.WSMsgType.BINARY


def _direct_queue(base: Any) -> Any:
    class DirectQueue(base):  # type: ignore[misc]
        """aiohttp's message queue, handing binary messages to ``take`` while none wait."""

        def __init__(
            self, protocol: Any, loop: asyncio.AbstractEventLoop, take: Callable[[bytes], bool] | None
        ) -> None:
            super().__init__(protocol, QUEUE_LIMIT, loop=loop)
            self.take = take

        def feed_data(self, data: Any, size: int) -> None:
            take = self.take
            if take is not None and data[0] is _BINARY and not self._buffer and take(data[1]):
                return
            super().feed_data(data, size)

    return DirectQueue


_DirectQueue = None if _reader is None else _direct_queue(_reader.WebSocketDataQueue)


def take_directly(
    ws: aiohttp.ClientWebSocketResponse, take: Callable[[bytes], bool], max_msg_size: int
) -> bool:
    """Route ``ws``'s binary messages to ``take`` (True: taken; False: queue it for ``receive()``).

    Call it right after ``ws_connect``, before sending anything: the peer has not spoken yet, so
    the parser replaced holds nothing. ``max_msg_size`` must be what ``ws_connect`` was given.
    Not for compressed sockets (False, nothing changed).
    """
    conn: Any = ws
    protocol = getattr(getattr(conn, "_writer", None), "protocol", None)
    old = getattr(conn, "_reader", None)
    if (
        _DirectQueue is None
        or ws.compress
        or protocol is None
        or getattr(protocol, "_payload", None) is not old
        or not isinstance(old, _reader.WebSocketDataQueue)
        or old._buffer
    ):
        return False
    queue = _DirectQueue(protocol, asyncio.get_running_loop(), take)
    parser = _reader.WebSocketReader(queue, max_msg_size, compress=False, decode_text=True)
    conn._reader, conn._parser = queue, parser
    protocol.set_parser(parser, queue, data_received_cb=getattr(protocol, "_data_received_cb", None))
    return True


class DirectWebSocketResponse(web.WebSocketResponse):
    """A server websocket whose binary messages go to :meth:`take` once one is set (before
    that, and whenever it declines, they queue for ``receive()`` as usual)."""

    def _post_start(self, request: Any, protocol: Any, writer: Any) -> None:
        conn: Any = request.protocol
        tail = getattr(conn, "_message_tail", None)
        if _DirectQueue is None or self._compress or not isinstance(tail, bytes):
            super()._post_start(request, protocol, writer)
            return
        # What came after the upgrade request goes to the parser put in place below, not to
        # aiohttp's (which would keep a frame cut short in a state no one can move).
        conn._message_tail = b""
        super()._post_start(request, protocol, writer)
        queue = _DirectQueue(request._protocol, asyncio.get_running_loop(), None)
        parser = _reader.WebSocketReader(
            queue, self._max_msg_size, compress=False, decode_text=self._decode_text
        )
        self._reader, self._parser = queue, parser
        callback = conn._data_received_cb
        conn._payload_parser, conn._message_tail = None, tail
        conn.set_parser(parser, data_received_cb=callback)

    def take(self, take: Callable[[bytes], bool]) -> None:
        """From now on hand binary messages to ``take`` while none are queued."""
        if _DirectQueue is not None and isinstance(self._reader, _DirectQueue):
            self._reader.take = take
