"""The data channel under a lossy, reordering and breaking network: data arrives complete and in order."""

from __future__ import annotations

import asyncio
import os
import re
import time

import aiohttp
import pytest

from sshgate.ssm.client import (
    MAX_MESSAGE,
    AgentProtocolError,
    PortMode,
    PortSession,
    StreamTarget,
    _Connection,
    open_port,
    open_shell,
)
from sshgate.ssm.codec import (
    ClientMessage,
    HandshakeRequest,
    OpenDataChannel,
    PayloadType,
    decode,
    encode_ack,
)
from sshgate.ssm.emulator import Emulator
from sshgate.ssm.reliable import (
    CLIENT,
    MESSAGE_COST,
    RESEND_INTERVAL,
    CoalescingTransport,
    DataChannel,
    Inbox,
    IncomingBuffer,
)
from tests.ssm.conftest import Aws, TcpServer
from tests.ssm.test_sessions import read_until, roundtrip


async def echo_through_stdio_port(
    aws: Aws, echo_server: TcpServer, payload: bytes
) -> tuple[bytes, PortSession]:
    target = await aws.start("AWS-StartSSHSession", {"portNumber": [str(echo_server.port)]})
    port = await open_port(target, control=aws.control, timeout=60)
    assert port.mode is PortMode.STDIO
    stream = await port.open_stream()
    async with asyncio.timeout(60):
        return await roundtrip(stream, payload), port


async def test_five_percent_dropped_messages(aws: Aws, emulator: Emulator, echo_server: TcpServer) -> None:
    emulator.faults.configure(drop_rate=0.05, seed=7)
    payload = os.urandom(48 * 1024)
    got, port = await echo_through_stdio_port(aws, echo_server, payload)
    assert got == payload
    agent_retransmits = emulator.session(port.session_id).channel.retransmits
    assert port.stats["retransmits"] + agent_retransmits > 0  # losses happened and were repaired
    await port.close()


async def test_reordered_messages(aws: Aws, emulator: Emulator, echo_server: TcpServer) -> None:
    emulator.faults.configure(reorder_rate=0.3, seed=3)
    payload = os.urandom(256 * 1024)
    got, port = await echo_through_stdio_port(aws, echo_server, payload)
    assert got == payload
    assert port.stats["out_of_order"] + emulator.session(port.session_id).channel.out_of_order > 0
    await port.close()


async def test_dropped_acks_cause_retransmits_and_duplicate_reacks(
    aws: Aws, emulator: Emulator, echo_server: TcpServer
) -> None:
    emulator.faults.configure(drop_ack_rate=0.2, seed=5)
    payload = os.urandom(32 * 1024)
    got, port = await echo_through_stdio_port(aws, echo_server, payload)
    assert got == payload
    agent = emulator.session(port.session_id).channel
    assert await agent.wait_drained(10)  # every lost ack was repaired by a retransmission...
    assert port.stats["duplicates"] > 0  # ...that the client re-acked as a duplicate
    await port.close()


async def test_websocket_dropped_mid_transfer_resumes(
    aws: Aws, emulator: Emulator, echo_server: TcpServer
) -> None:
    emulator.faults.configure(drop_socket_after=300)
    payload = os.urandom(1024 * 1024)
    got, port = await echo_through_stdio_port(aws, echo_server, payload)
    assert got == payload
    assert emulator.session(port.session_id).connections == 2  # resumed on a second websocket
    await port.close()


async def test_shell_survives_a_dropped_websocket(aws: Aws, emulator: Emulator) -> None:
    shell = await open_shell(await aws.start(), control=aws.control)
    await shell.write(b"echo before\n")
    await read_until(shell, rb"before\r\n")
    assert emulator.drop_connections(shell.session_id) == 1
    await shell.write(b"echo after-$((40+2))\n")
    await read_until(shell, rb"after-42")
    assert emulator.session(shell.session_id).connections == 2
    await shell.close()


async def test_abandoned_session_is_ended_after_the_reconnect_window(aws: Aws, emulator: Emulator) -> None:
    emulator.reconnect_window = 0.2
    try:
        target = await aws.start()
    finally:
        emulator.reconnect_window = 120.0
    shell = await open_shell(target)  # no control plane: it cannot resume
    emulator.drop_connections(target.session_id)
    await asyncio.wait_for(shell.wait_closed(), 5)
    assert "no control plane" in (shell.close_reason or "")
    session = emulator.session(target.session_id)
    await asyncio.wait_for(session.ended.wait(), 5)
    assert session.close_output == "the client did not reconnect"


async def test_stdin_before_the_pty_is_up_is_retransmitted_until_taken(aws: Aws, emulator: Emulator) -> None:
    """The agent refuses input while its pty is not up (no ack); the client's resends deliver it."""
    emulator.faults.configure(start_delay=0.6)
    command = "read -r x; printf 'hex:'; printf '%s' \"$x\" | od -An -v -tx1 | tr -d ' \\n'; printf ':end'"
    target = await aws.start("AWS-StartInteractiveCommand", {"command": [command]})
    output = bytearray()

    def deliver(message: ClientMessage) -> bool:
        output.extend(message.payload)
        return True

    channel = DataChannel(CLIENT, deliver=deliver, on_control=lambda _m: None)
    line = bytes(range(0x21, 0x7F))
    async with aiohttp.ClientSession() as http, http.ws_connect(target.stream_url) as ws:
        await ws.send_str(OpenDataChannel(target.token_value, "early-client", "1.2.650.0").to_json())
        channel.start()
        await channel.attach(ws.send_bytes)
        sent = time.monotonic()
        await channel.send(PayloadType.OUTPUT, line + b"\n")  # before any output: the pty is not up
        acked: float | None = None
        async with asyncio.timeout(10):
            while not (found := re.search(rb"hex:([0-9a-f]*):end", output)):
                channel.feed(await ws.receive_bytes())
                if acked is None and not len(channel.outgoing):
                    acked = time.monotonic()
        channel.close()
    assert bytes.fromhex(found.group(1).decode()) == line
    assert acked is not None and acked - sent > 0.5  # not taken before the process was up...
    assert channel.retransmits >= 2  # ...but refused, and taken from a later resend


async def test_port_data_before_the_agent_dialled_is_retransmitted(
    aws: Aws, emulator: Emulator, echo_server: TcpServer
) -> None:
    emulator.faults.configure(start_delay=0.6)
    payload = os.urandom(4096)
    got, port = await echo_through_stdio_port(aws, echo_server, payload)
    assert got == payload
    assert port.stats["retransmits"] >= 1
    await port.close()


async def test_hostile_agent_message_over_the_size_limit_ends_the_session(
    aws: Aws, emulator: Emulator
) -> None:
    """A frame the agent could never legitimately send is not buffered: the session ends, and is
    terminated on the service, instead of being resumed over and over."""
    emulator.faults.configure(tamper="output", tamper_payload="x" * (MAX_MESSAGE + 1))
    shell = await open_shell(await aws.start(), control=aws.control, no_handshake=True)
    async with asyncio.timeout(20):
        with pytest.raises(AgentProtocolError):  # the input waited for the agent's first message
            await shell.write(b"echo hi\n")
        assert await shell.read() == b""
        await shell.wait_closed()
    assert shell.violation is not None and shell.violation.what == "message"
    assert shell.close_reason is not None and "over" in shell.close_reason
    async with asyncio.timeout(10):
        while emulator.session(shell.session_id).status != "Terminated":
            await asyncio.sleep(0.05)
    assert emulator.session(shell.session_id).connections == 1  # not resumed


async def test_malformed_ack_ends_the_session(aws: Aws, emulator: Emulator) -> None:
    emulator.faults.configure(
        tamper="acknowledge", tamper_payload='{"AcknowledgedMessageSequenceNumber": 1e999}'
    )
    shell = await open_shell(await aws.start(), control=aws.control)
    async with asyncio.timeout(20):
        await shell.write(b"echo hi\n")
        await shell.wait_closed()
    assert shell.violation is not None and shell.violation.what == "acknowledge"


async def test_a_sink_never_passes_the_batch_a_reader_is_taking() -> None:
    """A message redelivered while the reader takes a full inbox's batch (``on_space``) queues
    behind that batch; handed to the sink, it would reach the client first."""
    sunk: list[bytes] = []
    accept = False

    def sink(message: ClientMessage) -> bool:
        if accept:
            sunk.append(message.payload)
        return accept

    def message(n: int) -> ClientMessage:
        return ClientMessage(CLIENT.receive_type, n, PayloadType.OUTPUT, b"%d" % n)

    inbox = Inbox(2 * MESSAGE_COST, on_space=lambda: inbox.offer(message(3)) and None)
    inbox.sink = sink
    assert inbox.offer(message(1)) and inbox.offer(message(2))  # the sink is paused: queued
    assert not inbox.offer(message(3))  # full: refused, left to the redelivery
    accept = True
    assert [m.payload for m in await inbox.get_many(100)] == [b"1", b"2"]
    assert sunk == []
    assert [m.payload for m in await inbox.get_many(100)] == [b"3"]
    assert inbox.offer(message(4)) and sunk == [b"4"]  # nothing waits: straight to the sink


async def test_empty_messages_fill_the_inbox_too() -> None:
    # A hostile agent's empty output messages cost memory as well: the inbox counts each one.
    inbox = Inbox(64 * 1024, on_space=lambda: None)
    taken = 0
    while inbox.offer(ClientMessage(CLIENT.receive_type, taken, PayloadType.OUTPUT, b"")):
        taken += 1
        assert taken < 10_000, "empty messages queued without end"
    assert taken == 64 * 1024 // MESSAGE_COST


def test_out_of_order_buffer_is_bounded_in_bytes() -> None:
    buffer = IncomingBuffer(capacity=1000, byte_capacity=4096)
    buffer.expected = 0
    stored = [buffer.store(ClientMessage("output_stream_data", seq, 1, b"x" * 1024)) for seq in range(1, 10)]
    assert stored == [True] * 4 + [False] * 5
    assert buffer.pop_expected() is None


class _RecordingTransport:
    """The part of an asyncio transport CoalescingTransport uses, keeping each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


async def test_a_frame_on_an_idle_socket_leaves_at_once_a_busy_turns_frames_in_one_write() -> None:
    inner = _RecordingTransport()
    transport = CoalescingTransport(inner)
    for frame in (b"ack-1", b"ack-2", bytearray(b"ack-3")):
        transport.write(frame)
    assert inner.writes == [b"ack-1"]
    assert transport.get_write_buffer_size() == 0  # everything else is the transport's own
    await asyncio.sleep(0)
    assert inner.writes == [b"ack-1", b"ack-2ack-3"]
    transport.write(b"ack-4")  # the stream is still busy: held for the end of the turn
    transport.write(b"ack-5")
    assert inner.writes[-1] == b"ack-2ack-3"
    await asyncio.sleep(0)
    assert inner.writes[-1] == b"ack-4ack-5"
    await asyncio.sleep(0)  # a turn without frames: idle again
    transport.write(b"keystroke")
    assert inner.writes[-1] == b"keystroke"
    transport.write(b"close-frame")
    transport.close()  # what is pending goes out before the close
    assert (inner.writes[-1], inner.closed) == (b"close-frame", True)
    await asyncio.sleep(0)
    assert len(inner.writes) == 5


async def test_an_idle_channel_parks_its_resend_timer_and_wakes_it_for_the_next_message() -> None:
    """Nothing in flight: the resend loop waits without a timer; a later unacked message is
    still resent (the send wakes the loop)."""
    sent: list[bytes] = []

    async def transport(raw: bytes) -> None:
        sent.append(raw)

    channel = DataChannel(CLIENT, deliver=lambda _m: True, on_control=lambda _m: None)
    await channel.attach(transport)
    channel.start()
    try:
        await channel.send(PayloadType.OUTPUT, b"a")
        channel.feed(encode_ack(decode(sent[0])))
        async with asyncio.timeout(2):
            while channel._unacked.is_set():  # the loop saw nothing in flight and parked
                await asyncio.sleep(0.02)
        await asyncio.sleep(RESEND_INTERVAL * 3)
        assert len(sent) == 1 and channel.retransmits == 0
        await channel.send(PayloadType.OUTPUT, b"b")  # never acked
        async with asyncio.timeout(3):
            while channel.retransmits == 0:
                await asyncio.sleep(0.02)
        assert sent[2:] and all(raw == sent[1] for raw in sent[2:])
    finally:
        channel.close()


async def test_an_agent_gets_one_handshake_per_session() -> None:
    """Each handshake answer stays buffered until acked: an agent repeating requests (or sending
    one after the session started) would pin the gateway's memory, so it breaks the protocol."""
    conn = _Connection(StreamTarget("s-1", "wss://127.0.0.1:1/x", "t"), None, "1.2.0.0", None)
    request = HandshakeRequest.for_session("3.3.0.0", "Standard_Stream", {}).to_json()
    shake = ClientMessage(CLIENT.receive_type, 0, PayloadType.HANDSHAKE_REQUEST, request)
    assert conn._deliver(shake)
    assert conn.violation is None
    assert conn._deliver(ClientMessage(CLIENT.receive_type, 1, PayloadType.HANDSHAKE_REQUEST, request))
    assert conn.violation is not None and "second handshake request" in str(conn.violation)
    assert conn.closed.is_set()
    with pytest.raises(AgentProtocolError):
        await conn.ready
    for task in list(conn._tasks):
        task.cancel()
