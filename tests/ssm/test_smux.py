"""The asyncio smux v1 session on its own, client and server wired back to back."""

from __future__ import annotations

import asyncio

import pytest

from sshgate.ssm.smux import Cmd, FrameDecoder, SmuxSession, StreamClosed, encode_frame


def pair(budget: int = 1 << 20) -> tuple[SmuxSession, SmuxSession]:
    holder: dict[str, SmuxSession] = {}

    async def to_server(data: bytes) -> None:
        await holder["server"].feed(data)

    async def to_client(data: bytes) -> None:
        await holder["client"].feed(data)

    holder["client"] = SmuxSession(to_server, client=True, receive_budget=budget, max_frame=4096)
    holder["server"] = SmuxSession(to_client, client=False, receive_budget=budget, max_frame=4096)
    return holder["client"], holder["server"]


async def test_streams_open_with_odd_ids_from_3_and_carry_data_both_ways() -> None:
    client, server = pair()
    first, second = await client.open_stream(), await client.open_stream()
    assert (first.id, second.id) == (3, 5)
    accepted = await server.accept()
    assert accepted.id == 3
    await first.write(b"x" * 10_000)  # split into 4096-byte frames
    got = b""
    while len(got) < 10_000:
        got += await accepted.read()
    assert got == b"x" * 10_000
    await accepted.write(b"back")
    assert await first.read() == b"back"
    await first.close()
    assert await accepted.read() == b""  # FIN is EOF
    with pytest.raises(StreamClosed):
        await accepted.write(b"after FIN")


async def test_budget_pauses_input_only_when_exhausted() -> None:
    """A stream nobody reads absorbs data up to the session budget; others keep flowing until then."""
    client, server = pair(budget=64 * 1024)
    slow, fast = await client.open_stream(), await client.open_stream()
    slow_peer, fast_peer = await server.accept(), await server.accept()
    await slow.write(b"s" * 32 * 1024)
    await fast.write(b"f" * 16 * 1024)
    assert len(await fast_peer.read()) > 0  # not stalled by the unread slow stream
    blocked = asyncio.ensure_future(slow.write(b"s" * 128 * 1024))
    await asyncio.sleep(0)
    assert not blocked.done()  # budget exhausted: the writer waits for the reader
    received = 0
    async with asyncio.timeout(5):
        while received < (32 + 128) * 1024:
            received += len(await slow_peer.read())
        await blocked


async def test_keepalive_sends_nops_and_closes_a_silent_session() -> None:
    written: list[bytes] = []

    async def write(data: bytes) -> None:
        written.append(data)

    session = SmuxSession(write, client=True, keepalive=(0.02, 0.06))
    stream = await session.open_stream()
    for _ in range(100):
        if session.closed:
            break
        await asyncio.sleep(0.02)
    assert session.closed and isinstance(session.close_error, TimeoutError)
    frames = FrameDecoder().feed(b"".join(written))
    assert any(f.cmd == Cmd.NOP for f in frames)
    with pytest.raises(TimeoutError):
        await stream.read()


async def test_unknown_stream_data_is_ignored() -> None:
    client, _server = pair()
    await client.feed(encode_frame(Cmd.PSH, 99, b"stray"))
    assert client.streams == {}


async def test_a_cancelled_writer_still_sends_its_frame_whole() -> None:
    """The pipe takes frames in pieces; a frame cut short would desynchronise every stream."""
    sent = bytearray()
    gate = asyncio.Event()

    async def slow_pipe(data: bytes) -> None:
        for pos in range(0, len(data), 1024):  # like the SSM data channel's 1 KiB messages
            sent.extend(data[pos : pos + 1024])
            await gate.wait()

    gate.set()
    session = SmuxSession(slow_pipe, client=True)
    first, second = await session.open_stream(), await session.open_stream()
    gate.clear()
    writer = asyncio.ensure_future(first.write(b"a" * 8192))
    await asyncio.sleep(0.01)
    writer.cancel()  # mid-frame: one KiB of it is out
    gate.set()
    await second.write(b"b" * 100)
    frames = FrameDecoder().feed(bytes(sent))
    assert [(f.cmd, f.stream_id, len(f.data)) for f in frames] == [
        (Cmd.SYN, 3, 0),
        (Cmd.SYN, 5, 0),
        (Cmd.PSH, 3, 8192),
        (Cmd.PSH, 5, 100),
    ]
