"""take_directly against a raw websocket server on 127.0.0.1 that writes hand-made frames: binary
messages reach ``take`` in the receive callback and in order with everything that is queued for
``receive()``; a broken or hostile peer (a bad opcode, a continuation with no start, fragments
past the size limit) ends in aiohttp's error, never a hang or unbounded memory."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from sshgate.ssm.websocket_direct import take_directly

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
LIMIT = 4096


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A server frame (unmasked), RFC 6455 §5.2."""
    head = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        return head + bytes([len(payload)]) + payload
    return head + bytes([126]) + struct.pack("!H", len(payload)) + payload


@asynccontextmanager
async def raw_server(bursts: list[bytes], seen: list[bytes]) -> AsyncIterator[str]:
    """Accepts one upgrade, writes ``bursts`` 0.2 s apart once the client's first frame arrived
    (the SSM service waits for the open-data-channel frame too), records what the client sends."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        seen.append(await reader.read(65536))
        for n, burst in enumerate(bursts):
            if n:
                await asyncio.sleep(0.2)
            writer.write(burst)
        with contextlib.suppress(TimeoutError):  # until the client hangs up, or is quiet
            while data := await asyncio.wait_for(reader.read(65536), 1.0):
                seen.append(data)
        writer.close()
        done.set()

    done = asyncio.Event()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/"
        await asyncio.wait_for(done.wait(), 5)
    finally:
        server.close()
        await server.wait_closed()


Arrival = list[tuple[str, object]]


async def run(*bursts: bytes, decline: bytes = b"") -> tuple[Arrival, list[bytes]]:
    """In arrival order, what ``take`` took ("take", data) and what ``receive()`` returned
    ("receive", data, or the message type or error at the end); and what the client sent.
    ``take`` declines the message ``decline``."""
    arrival: Arrival = []
    seen: list[bytes] = []

    def take(raw: bytes) -> bool:
        if raw == decline:
            return False
        arrival.append(("take", raw))
        return True

    async with raw_server(list(bursts), seen) as url, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url, max_msg_size=LIMIT)
        assert take_directly(ws, take, LIMIT)
        await ws.send_bytes(b"open")
        async with asyncio.timeout(10):
            while True:
                msg = await ws.receive()
                if msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    arrival.append(("receive", msg.data))
                    continue
                arrival.append(("receive", msg.data if msg.type == aiohttp.WSMsgType.ERROR else msg.type))
                break
        await ws.close()
    return arrival, seen


def error_of(arrival: Arrival) -> aiohttp.WebSocketError:
    how, error = arrival[-1]
    assert how == "receive" and isinstance(error, aiohttp.WebSocketError)
    return error


async def test_messages_keep_their_order_across_take_and_receive() -> None:
    messages = [b"m%02d" % n for n in range(40)]
    first = b"".join(frame(0x2, m) for m in messages[:5])
    first += frame(0x9, b"are you there")  # a ping between data: answered, order kept
    first += b"".join(frame(0x2, m) for m in messages[5:10])
    first += frame(0x1, b"text")
    second = b"".join(frame(0x2, m) for m in messages[10:]) + frame(0x8, struct.pack("!H", 1000))
    arrival, seen = await run(first, second, decline=b"m03")
    data = [item for _, item in arrival if isinstance(item, bytes)]
    assert data == messages  # nothing overtook anything
    # Taken in the callback up to the declined one; it and all behind it (the text too) were
    # queued for receive(); once that drained, the second burst was taken directly again.
    assert [how for how, item in arrival if item in messages[:3]] == ["take"] * 3
    assert [how for how, item in arrival if item in messages[3:10] or item == "text"] == ["receive"] * 8
    assert [how for how, item in arrival if item in messages[10:]] == ["take"] * 30
    assert arrival[-1][1] in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert any(chunk[0] & 0x0F == 0xA for chunk in seen[1:])  # the pong


async def test_a_bad_opcode_is_an_error_not_a_hang() -> None:
    arrival, _ = await run(frame(0x2, b"fine") + frame(0x3, b"what is this"))
    assert arrival[0] == ("take", b"fine")
    assert error_of(arrival).code == aiohttp.WSCloseCode.PROTOCOL_ERROR


async def test_a_continuation_without_a_start_is_an_error() -> None:
    arrival, _ = await run(frame(0x0, b"orphan"))
    assert len(arrival) == 1
    assert error_of(arrival).code == aiohttp.WSCloseCode.PROTOCOL_ERROR


async def test_fragments_past_the_size_limit_end_with_message_too_big() -> None:
    fragments = frame(0x2, b"x" * 1000, fin=False)
    fragments += b"".join(frame(0x0, b"x" * 1000, fin=False) for _ in range(20))
    arrival, _ = await run(fragments + frame(0x0, b"end"))
    assert len(arrival) == 1
    assert error_of(arrival).code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
