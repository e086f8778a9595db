"""The emulator's bytes on the wire, checked with a hand-driven websocket against docs/ssm-protocol.md §12."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from sshgate.ssm.codec import (
    ActionStatus,
    ClientMessage,
    HandshakeRequest,
    HandshakeResponse,
    MessageType,
    OpenDataChannel,
    PayloadType,
    ProcessedAction,
    SizeData,
    ack_message,
    decode,
    encode,
)
from sshgate.ssm.reliable import IncomingBuffer, OutgoingBuffer, websocket_post, websocket_transport
from tests.ssm.conftest import Aws, TcpServer


class RawClient:
    """Speaks the protocol by hand, so every byte the emulator sends can be inspected."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seq = 0

    async def receive(self, timeout: float = 10.0) -> tuple[bytes, ClientMessage]:
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        return msg.data, decode(msg.data)

    async def next_stream(self) -> tuple[bytes, ClientMessage]:
        while True:
            raw, message = await self.receive()
            if message.message_type == MessageType.OUTPUT_STREAM_DATA:
                return raw, message

    async def send(self, payload_type: int, payload: bytes, seq: int | None = None) -> ClientMessage:
        if seq is None:
            seq, self.seq = self.seq, self.seq + 1
        message = ClientMessage(MessageType.INPUT_STREAM_DATA, seq, payload_type, payload)
        await self.ws.send_bytes(encode(message))
        return message

    async def ack(self, message: ClientMessage) -> None:
        await self.ws.send_bytes(encode(ack_message(message)))

    async def expect_ack(self, seq: int, timeout: float = 10.0) -> None:
        while True:
            _, message = await self.receive(timeout)
            if message.message_type == MessageType.ACKNOWLEDGE:
                body = json.loads(message.payload)
                assert (message.sequence_number, message.flags, message.payload_type) == (0, 3, 0)
                assert body["AcknowledgedMessageType"] == "input_stream_data"
                if body["AcknowledgedMessageSequenceNumber"] == seq:
                    return

    async def send_until_acked(self, payload_type: int, payload: bytes) -> None:
        """Resend one message unchanged until it is acked, as clients do while the agent answers
        "handler not ready" (its TCP connection or pty is not up yet)."""
        message = await self.send(payload_type, payload)
        while True:
            try:
                return await self.expect_ack(message.sequence_number, timeout=0.3)
            except TimeoutError:
                await self.ws.send_bytes(encode(message))


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def connect_raw(http: aiohttp.ClientSession, aws: Aws, *args: object) -> RawClient:
    target = await aws.start(*args)  # type: ignore[arg-type]
    ws = await http.ws_connect(target.stream_url)
    await ws.send_str(OpenDataChannel(target.token_value, "raw-client", "1.2.650.0").to_json())
    return RawClient(ws)


async def test_shell_wire_format(http: aiohttp.ClientSession, aws: Aws) -> None:
    client = await connect_raw(http, aws)
    raw, first = await client.receive()
    assert first.message_type == "start_publication"
    assert first.payload_digest != hashlib.sha256(first.payload).digest()  # the service's bogus digest

    raw, output = await client.next_stream()
    outputs = {0: output.payload}
    assert raw[:4] == (116).to_bytes(4, "big") and raw[4:36].rstrip(b" ") == b"output_stream_data"
    assert (output.sequence_number, output.flags, output.payload_type) == (0, 1, PayloadType.OUTPUT)

    # Not acked: the agent resends the very same bytes (same seq, same MessageId) after its RTO.
    while True:
        again, message = await client.next_stream()
        if message.sequence_number == 0:
            break
        outputs[message.sequence_number] = message.payload  # more prompt output, acked as it comes
        await client.ack(message)
    assert again == raw
    await client.ack(output)

    size = await client.send(PayloadType.SIZE, SizeData(200, 50).to_json())
    await client.expect_ack(size.sequence_number)
    await client.send(PayloadType.SIZE, SizeData(200, 50).to_json(), seq=size.sequence_number)
    await client.expect_ack(size.sequence_number)  # duplicates are re-acked

    command = await client.send(PayloadType.OUTPUT, b"yes xxxxxxxxx | head -n 600; exit\n")
    await client.expect_ack(command.sequence_number)
    while True:
        raw, message = await client.receive()
        if message.message_type == "channel_closed":
            closed = json.loads(message.payload)
            assert closed["MessageType"] == "channel_closed" and closed["Output"] == ""
            break
        if message.message_type != "output_stream_data":
            continue
        assert len(message.payload) <= 1024 and message.flags == 0
        outputs[message.sequence_number] = message.payload
        await client.ack(message)
    assert sorted(outputs) == list(range(len(outputs)))  # nothing missing
    text = b"".join(outputs[seq] for seq in sorted(outputs))
    assert text.count(b"xxxxxxxxx") == 1 + 600  # the pty echo plus the output
    await client.ws.close()


async def test_shell_output_is_cut_on_utf8_boundaries_like_the_agents_reads(
    http: aiohttp.ClientSession, aws: Aws
) -> None:
    """The pty's output, read in the readiness callback when the channel can take it at once or
    by the output task, is cut into the agent's 1 KiB reads with split UTF-8 runes carried over:
    every message decodes on its own, none is over 1024 bytes plus a carried rune."""
    client = await connect_raw(http, aws)
    command = b"stty -echo; i=0; while [ $i -lt 3000 ]; do printf '\\342\\230\\203'; i=$((i+1)); done; exit\n"
    _, prompt = await client.next_stream()  # the pty is up
    payloads = {prompt.sequence_number: prompt.payload}
    await client.ack(prompt)
    await client.send(PayloadType.OUTPUT, command)
    async with asyncio.timeout(30):
        while True:
            _, message = await client.receive()
            if message.message_type == "channel_closed":
                break
            if message.message_type == MessageType.OUTPUT_STREAM_DATA:
                payloads[message.sequence_number] = message.payload
                await client.ack(message)
    assert sorted(payloads) == list(range(len(payloads)))
    for payload in payloads.values():
        payload.decode()  # no rune cut in two
        assert len(payload) <= 1024 + 3
    text = b"".join(payloads[seq] for seq in sorted(payloads)).decode()
    assert text.count("\u2603") == 3000
    await client.ws.close()


async def test_port_handshake_and_discard_before_completion(
    http: aiohttp.ClientSession, aws: Aws, echo_server: TcpServer
) -> None:
    client = await connect_raw(http, aws, "AWS-StartSSHSession", {"portNumber": [str(echo_server.port)]})
    _, request_msg = await client.next_stream()
    assert (request_msg.sequence_number, request_msg.flags, request_msg.payload_type) == (0, 1, 5)
    request = HandshakeRequest.from_json(request_msg.payload)
    assert request.actions[0].parameters == {
        "SessionType": "Port",
        "Properties": {"portNumber": str(echo_server.port)},
    }
    await client.ack(request_msg)

    early = await client.send(PayloadType.OUTPUT, b"too early")
    await client.expect_ack(early.sequence_number)  # acked, but discarded

    response = HandshakeResponse("1.2.650.0", (ProcessedAction("SessionType", ActionStatus.SUCCESS),))
    await client.send(PayloadType.HANDSHAKE_RESPONSE, response.to_json())
    _, complete = await client.next_stream()
    assert (complete.sequence_number, complete.payload_type) == (1, PayloadType.HANDSHAKE_COMPLETE)
    await client.ack(complete)

    await client.send_until_acked(PayloadType.OUTPUT, b"on time")
    echoed = b""
    while echoed != b"on time":
        _, message = await client.next_stream()
        await client.ack(message)
        echoed += message.payload
    assert echo_server.connections == 1
    await client.ws.close()


def test_outgoing_buffer_resends_only_the_oldest_after_rto() -> None:
    out = OutgoingBuffer(capacity=3)
    for seq in range(3):
        out.add(seq, b"m%d" % seq, now=0.0, sent=True)
    assert out.full
    assert out.due(0.1) is None  # RTO starts at 200 ms
    assert out.due(0.25) == (b"m0", 1)
    assert out.due(0.3) is None  # its send time was reset
    assert out.ack(0, now=0.3) and not out.ack(0, now=0.3)
    assert out.due(0.5) == (b"m1", 1)
    assert out.take_all(1.0) == [b"m1", b"m2"]


def test_incoming_buffer_is_bounded() -> None:
    incoming = IncomingBuffer(capacity=2)
    message = ClientMessage("output_stream_data", 5, 1, b"")
    assert incoming.store(message)
    assert incoming.store(ClientMessage("output_stream_data", 6, 1, b""))
    assert not incoming.store(ClientMessage("output_stream_data", 7, 1, b""))
    incoming.expected = 5
    assert incoming.pop_expected() is message


async def test_channel_pair_delivers_in_order_over_a_shuffling_link() -> None:
    """Two DataChannels (client and agent presets) over an in-memory link that drops and reorders."""
    import random

    from sshgate.ssm.reliable import AGENT, CLIENT, DataChannel

    rng = random.Random(11)
    received: list[bytes] = []
    agent = DataChannel(
        AGENT, deliver=lambda m: received.append(m.payload) is None, on_control=lambda m: None
    )
    client = DataChannel(CLIENT, deliver=lambda m: True, on_control=lambda m: None)
    held: dict[int, list[bytes]] = {id(agent): [], id(client): []}

    def link(peer: DataChannel):  # type: ignore[no-untyped-def]
        queue = held[id(peer)]

        async def send(raw: bytes) -> None:
            roll = rng.random()
            if roll < 0.05:
                return  # lost
            if roll < 0.3:
                queue.append(raw)  # delivered later, out of order
                return
            peer.feed(raw)

        return send

    async def release_held() -> None:
        for peer in (agent, client):
            queue = held[id(peer)]
            while queue:
                peer.feed(queue.pop(0))

    await client.attach(link(agent))
    await agent.attach(link(client))
    client.start()
    agent.start()
    payloads = [b"%04d" % i for i in range(100)]
    for index, payload in enumerate(payloads):
        await client.send(PayloadType.OUTPUT, payload)
        if index % 7 == 0:
            await release_held()
    async with asyncio.timeout(30):
        while len(received) < len(payloads) or len(client.outgoing):
            await asyncio.sleep(0.05)
            await release_held()
    assert received == payloads
    assert client.retransmits > 0 and agent.out_of_order > 0
    client.close()
    agent.close()


async def test_websocket_transport_survives_aiohttps_shared_drain_future() -> None:
    """aiohttp's paused senders wait on one future; cancelling one sender cancels it for all."""

    class PausedWebSocket:
        closed = False

        def __init__(self) -> None:
            self.drain = asyncio.get_running_loop().create_future()
            self.written: list[bytes] = []

        async def send_bytes(self, data: bytes) -> None:
            self.written.append(data)  # aiohttp writes the frame, then waits for the drain
            await self.drain

    ws = PausedWebSocket()
    send = websocket_transport(ws)
    cancelled, bystander = asyncio.ensure_future(send(b"a")), asyncio.ensure_future(send(b"b"))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.wait({cancelled, bystander}, timeout=1)
    assert cancelled.cancelled()
    assert bystander.done() and bystander.exception() is None  # its frame was written: sent
    assert ws.written == [b"a", b"b"]


async def test_websocket_post_writes_whole_frames_in_order_on_a_real_socket() -> None:
    """Acks leave through aiohttp's frame writer without awaiting: the hook must exist on both
    aiohttp's client and server sockets, and frames written that way must arrive intact and in order."""
    received: list[bytes] = []
    done = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        assert websocket_post(ws) is not None
        async for msg in ws:
            received.append(msg.data)
            if len(received) == 3:
                done.set()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    frames = [b"a" * 10, b"b" * 300, b"c" * 70_000]  # all three websocket length encodings
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
            post = websocket_post(ws)
            assert post is not None
            for frame in frames:
                post(frame)
            await asyncio.wait_for(done.wait(), 10)
            await ws.close()
            with pytest.raises(ConnectionResetError):
                post(b"late")
    finally:
        await runner.cleanup()
    assert received == frames
