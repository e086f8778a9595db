"""SsmUpstream keeps only the SSM sessions still open: one long-lived connection that runs command after
command must not hold every finished session until it closes. A shell's keystrokes and their echo
cross the gateway without task hops, and a paused client still gets every byte in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from sshgate.aws.clients import AwsClients
from sshgate.aws.targets import Ec2Target
from sshgate.config import Aws as AwsConfig
from sshgate.config import Ec2Resource
from sshgate.policy.input import Ec2Facts
from sshgate.ssm.emulator import Emulator
from sshgate.upstream.base import ExitSignal, SessionRequest
from sshgate.upstream.ssm import SsmUpstream
from sshgate.upstream.ssm_relay import SessionPump
from tests.ssm.conftest import REGION, Aws


class Collector:
    """The client side of one channel: what arrived, and when the upstream was done."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = asyncio.Event()
        self.arrived = asyncio.Event()
        self.tasks: list[asyncio.Task[object] | None] = []  # the task each piece arrived in
        self.error: str | None = None
        self.broken = False  # writing to this client fails, as to an SSH channel already closing

    def upstream_data(self, data: bytes, stderr: bool) -> None:
        if self.broken:
            raise BrokenPipeError("channel is closing")
        self.data += data
        self.tasks.append(asyncio.current_task())
        self.arrived.set()

    async def wait_for(self, marker: bytes) -> None:
        async with asyncio.timeout(20):
            while marker not in self.data:
                self.arrived.clear()
                await self.arrived.wait()

    def upstream_eof(self) -> None:
        pass

    def upstream_exit(self, status: int | None, signal: ExitSignal | None) -> None:
        pass

    def upstream_closed(self, error: str | None) -> None:
        self.error = error
        self.closed.set()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _upstream(aws: Aws, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> SsmUpstream:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # the gateway's ambient credentials
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    resource = Ec2Resource(
        name="app",
        type="ec2",
        instance_id=aws.instance_id,
        region=REGION,
        native_users=[],
        command_document="AWS-StartNonInteractiveCommand",
    )
    clients = AwsClients(AwsConfig(region=REGION, endpoints={"ssm": emulator.url}))
    facts = Ec2Facts(aws.instance_id, REGION, "123456789012", "running", {})
    return SsmUpstream(clients, resource, Ec2Target(facts), None)


async def test_finished_sessions_are_let_go(
    aws: Aws, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = _upstream(aws, emulator, monkeypatch)
    try:
        for n in range(4):
            client = Collector()
            channel = await upstream.open_session(SessionRequest("exec", command=f"echo run-{n}"), client)
            await asyncio.wait_for(client.closed.wait(), 20)
            channel.close()
            assert client.data.startswith(f"run-{n}\n".encode())
        # The one before the last may still be closing; none of the earlier ones is kept.
        assert len(upstream._sessions) <= 2
    finally:
        await upstream.close()


SHELL = SessionRequest("shell", term_type="xterm", term_size=(80, 24, 0, 0))


@asynccontextmanager
async def shell_pump(
    aws: Aws, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[SessionPump, Collector, SsmUpstream]]:
    upstream = _upstream(aws, emulator, monkeypatch)
    client = Collector()
    try:
        channel = await upstream.open_session(SHELL, client)
        assert isinstance(channel, SessionPump)
        yield channel, client, upstream
        channel.close()
    finally:
        await upstream.close()


async def test_a_keystroke_and_its_echo_cross_without_task_hops(
    aws: Aws, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Typed data is on the websocket when ``write`` returns (no writer task in between), and the
    echo reaches the client in the websocket's receive callback: in no task at all, neither the
    pump's reader nor the read loop that awaits aiohttp's queue."""
    async with shell_pump(aws, emulator, monkeypatch) as (channel, client, upstream):
        channel.write(b"echo up-$((1+1))\r")
        await client.wait_for(b"up-2")  # the agent has spoken: input may go at once
        data_channel = upstream._sessions[-1]._conn.channel
        typed = len(client.tasks)
        for key in b"echo fast-$((6*7))\r":
            seq = data_channel._next_seq
            channel.write(bytes([key]))
            assert data_channel.outgoing._items[seq].sent  # numbered and written in this call
        await client.wait_for(b"fast-42")
        assert client.tasks[typed:] and set(client.tasks[typed:]) == {None}


async def test_a_paused_client_gets_the_output_in_order(
    aws: Aws, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Output held while the client's window is full (queued for the reader task) and output
    handed over as it arrives never overtake each other."""
    async with shell_pump(aws, emulator, monkeypatch) as (channel, client, _):
        channel.write(b"seq 1 20000; echo seq-$((1+1))done\r")
        await client.wait_for(b"\n1000")
        channel.pause_reading()
        await asyncio.sleep(0.5)
        held = len(client.data)
        await asyncio.sleep(0.3)
        assert len(client.data) == held  # paused: nothing more arrives (the agent is held back)
        channel.resume_reading()
        await client.wait_for(b"seq-2done\r\n")
        lines = client.data.split(b"seq-2done\r\n")[0].split(b"\r\n")
        numbers = [int(line) for line in lines if line.isdigit()]
        assert numbers == list(range(1, 20001))


async def test_a_client_that_cannot_take_the_echo_ends_the_channel_not_the_agents_fault(
    aws: Aws, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Output handed over in the websocket's callback to a client channel that fails: the
    channel ends with that error, as when the reader task passed it on, and the SSM session is
    not taken for a protocol violation by the agent."""
    async with shell_pump(aws, emulator, monkeypatch) as (channel, client, upstream):
        channel.write(b"echo up-$((1+1))\r")
        await client.wait_for(b"up-2")
        client.broken = True
        channel.write(b"echo more\r")
        await asyncio.wait_for(client.closed.wait(), 10)
        assert client.error == "channel is closing"
        assert upstream._sessions[-1].violation is None
