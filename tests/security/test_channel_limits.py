"""The channels of one authenticated connection. It cannot open them without end: each session
channel is an upstream session (for EC2 and ECS an SSM session), each forward an upstream
connection; past ``max_session_channels_per_connection`` / ``max_forwards_per_connection`` the
client is told why and the refusal is audited, and closing a channel frees its place. A session
channel keeps at most 64 environment variables of 4 KiB (asyncssh kept every one: 100,000 env
requests cost the gateway 100 MB). And one channel's end does not disturb the setup the
connection's next channel waits on."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.support.gateway import Client, GatewayProcess, asyncssh_login
from tests.support.net import free_port, wait_port

LIMIT = 2


@pytest.fixture
def gw(keys: Keys, upstream: Upstream, tmp_path: Path) -> Iterator[GatewayProcess]:
    config = base_config(keys, upstream)
    config["limits"] = {
        **config["limits"],
        "max_session_channels_per_connection": LIMIT,
        "max_forwards_per_connection": LIMIT,
    }
    proc = GatewayProcess(tmp_path / "gw", config).start()
    yield proc
    proc.stop()


async def test_session_channels_past_the_limit_are_refused_until_one_closes(
    gw: GatewayProcess, keys: Keys
) -> None:
    async with asyncssh_login(gw, keys.alice) as conn:
        held = [await conn.create_process("sleep 30") for _ in range(LIMIT)]
        with pytest.raises(asyncssh.ChannelOpenError) as refused:
            await conn.create_process("echo one-too-many")
        assert refused.value.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
        assert refused.value.reason == f"too many session channels open on this connection (limit {LIMIT})"
        event = gw.wait_event("channel.refused", kind="session")
        assert event["reason"] == refused.value.reason
        held[0].close()
        await held[0].wait_closed()
        again = await conn.run("echo freed", check=True)
        assert again.stdout == "freed\n"
        for process in held[1:]:
            process.close()


async def test_a_channel_closed_while_the_connection_binds_leaves_the_next_one_working(
    gw: GatewayProcess, keys: Keys
) -> None:
    """Closed before the upstream connected, a first channel used to cancel the connection's
    binding with it, and every later channel of the connection waited forever."""
    async with asyncssh_login(gw, keys.alice) as conn:
        first = await conn.create_process("sleep 30")
        first.close()
        await first.wait_closed()
        result = await asyncio.wait_for(conn.run("echo next", check=True), 20)
        assert result.stdout == "next\n"


async def test_forwards_past_the_limit_are_refused_even_when_asked_for_at_once(
    gw: GatewayProcess, keys: Keys, upstream: Upstream
) -> None:
    port = upstream.sshd.port  # any listener the policy lets alice reach: the upstream sshd
    async with asyncssh_login(gw, keys.alice) as conn:
        burst = await asyncio.gather(
            *(conn.open_connection("127.0.0.1", port) for _ in range(LIMIT + 3)), return_exceptions=True
        )
        opened = [r for r in burst if not isinstance(r, BaseException)]
        refusals = [r for r in burst if isinstance(r, asyncssh.ChannelOpenError)]
        assert len(opened) == LIMIT and len(refusals) == 3, burst
        assert all(r.reason == f"too many forwards open on this connection (limit {LIMIT})" for r in refusals)
        assert len(gw.wait_events("channel.refused", 3, kind="forward")) == 3
        for reader, writer in opened:
            assert (await reader.readline()).startswith(b"SSH-2.0-OpenSSH")
            writer.close()
        gw.wait_events("channel.close", LIMIT, kind="forward")  # the closes reached the gateway
        reader, writer = await conn.open_connection("127.0.0.1", port)
        assert (await reader.readline()).startswith(b"SSH-2.0-OpenSSH")
        writer.close()


def test_openssh_shows_the_reason(gw: GatewayProcess, keys: Keys, upstream: Upstream, tmp_path: Path) -> None:
    """``ssh -L`` with one connection more than the limit: the stock client prints the reason."""
    client = Client(gw, keys.alice, tmp_path / "client")
    local = free_port()
    forward = client.ssh_argv(
        "alice+web-1",
        options=["-N", "-o", "LogLevel=INFO", "-L", f"127.0.0.1:{local}:127.0.0.1:{upstream.sshd.port}"],
    )
    with subprocess.Popen(forward, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE) as ssh:
        try:
            wait_port(local)  # its probe is a forward too: wait until the gateway has closed it
            gw.wait_event("channel.close", kind="forward")
            held = [socket.create_connection(("127.0.0.1", local), timeout=10) for _ in range(LIMIT)]
            for sock in held:
                assert sock.recv(64).startswith(b"SSH-2.0-OpenSSH")  # through the gateway
            one_more = socket.create_connection(("127.0.0.1", local), timeout=10)
            assert one_more.recv(64) == b""  # ssh closes it: the gateway refused the channel
            for sock in [*held, one_more]:
                sock.close()
        finally:
            ssh.terminate()
        _, stderr = ssh.communicate(timeout=10)
    assert b"administratively prohibited: too many forwards open on this connection (limit 2)" in stderr, (
        stderr
    )


async def test_a_flood_of_environment_variables_is_cut_at_the_limit(gw: GatewayProcess, keys: Keys) -> None:
    # First one variable over 4 KiB, refused on its own (sshd would take it), then the flood.
    env = {"LANG": "x" * 5000, **{f"LC_X{i:05d}": "v" * 200 for i in range(5000)}}
    async with asyncssh_login(gw, keys.alice) as conn:
        shown = await asyncio.wait_for(conn.run("env | grep -c '^LC_X'; echo ${#LANG}", env=env), 60)
    assert shown.stdout == "64\n0\n"  # without the limits: 128 and 5000 (sshd keeps 128)
