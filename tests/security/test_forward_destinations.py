"""A rule that keeps forwards away from 127.0.0.1 holds however the client spells it. The
resource's sshd reads ``2130706433`` or ``::ffff:127.0.0.1`` as 127.0.0.1, and the policy used to
see the spelling (and allow it); now the policy, the upstream and the recording see 127.0.0.1
(docs/policy.md, request stage). A port outside 1-65535 never reaches the policy."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.support.gateway import Client, GatewayProcess, asyncssh_login
from tests.support.net import free_port, wait_port

SPELLINGS = ("127.0.0.1", "2130706433", "::ffff:127.0.0.1")


@pytest.fixture
def gw(keys: Keys, upstream: Upstream, tmp_path: Path) -> Iterator[GatewayProcess]:
    """The upstream sshd's own port on 127.0.0.1 is deny-listed for forwards, by address only."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "deny.rego").write_text(
        f"""package formal.v2

import rego.v1

MESSAGE := "no forwards to its sshd"

request := {{"action": "block", "type": "block_with_custom_message", "message": MESSAGE}} if {{
\tinput.request.kind == "port_forward"
\tinput.request.host == "127.0.0.1"
\tinput.request.port == {upstream.sshd.port}
}}
"""
    )
    config = base_config(keys, upstream)
    config["policies"] = {"paths": [str(tmp_path / "rules")]}
    proc = GatewayProcess(tmp_path / "gw", config).start()
    yield proc
    proc.stop()


@pytest.fixture
async def service() -> AsyncIterator[int]:
    """A listener on the resource's 127.0.0.1 the rule does not name."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_every_spelling_of_the_denied_address_is_blocked(
    gw: GatewayProcess, keys: Keys, upstream: Upstream
) -> None:
    async with asyncssh_login(gw, keys.alice) as conn:
        for host in SPELLINGS:
            with pytest.raises(asyncssh.ChannelOpenError) as refused:
                await conn.open_connection(host, upstream.sshd.port)
            assert "no forwards to its sshd" in refused.value.reason, host
    decisions = gw.wait_events("policy.decision", len(SPELLINGS), stage="request", kind="port_forward")
    assert [(d["host"], d["action"]) for d in decisions] == [("127.0.0.1", "block")] * len(SPELLINGS)


async def test_an_allowed_forward_goes_to_the_canonical_address(
    gw: GatewayProcess, keys: Keys, service: int
) -> None:
    async with asyncssh_login(gw, keys.alice) as conn:
        reader, writer = await conn.open_connection("0x7f.1", service)
        assert await reader.readline() == b"hello\n"
        writer.close()
    assert gw.wait_event("channel.open", kind="forward")["host"] == "127.0.0.1"


async def test_a_port_outside_1_to_65535_is_refused_before_the_policy(
    gw: GatewayProcess, keys: Keys, upstream: Upstream
) -> None:
    wrapped = upstream.sshd.port + 65536  # what a 16-bit port would make of it
    async with asyncssh_login(gw, keys.alice) as conn:
        with pytest.raises(asyncssh.ChannelOpenError) as refused:
            await conn.open_connection("127.0.0.1", wrapped)
    assert refused.value.reason == f"port {wrapped} is outside 1-65535"
    assert gw.wait_event("channel.refused", kind="forward")["reason"] == refused.value.reason
    assert not gw.events("policy.decision", kind="port_forward")


def test_openssh_forward_to_a_decimal_spelling_is_blocked(
    gw: GatewayProcess, keys: Keys, upstream: Upstream, tmp_path: Path
) -> None:
    client = Client(gw, keys.alice, tmp_path / "client")
    local = free_port()
    target = f"127.0.0.1:{local}:2130706433:{upstream.sshd.port}"
    forward = client.ssh_argv("alice+web-1", options=["-N", "-o", "LogLevel=INFO", "-L", target])
    with subprocess.Popen(forward, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE) as ssh:
        try:
            wait_port(local)  # its probe is a forward too, refused like the next one
            with socket.create_connection(("127.0.0.1", local), timeout=10) as sock:
                assert sock.recv(64) == b""  # ssh closes it: nothing of the sshd's banner came
        finally:
            ssh.terminate()
        try:
            _, stderr = ssh.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # ssh -N under load can outlive SIGTERM (tests/e2e/test_policy.py)
            ssh.kill()
            _, stderr = ssh.communicate()
    assert b"Blocked by policy: no forwards to its sshd" in stderr, stderr
    assert {d["host"] for d in gw.events("policy.decision", kind="port_forward")} == {"127.0.0.1"}
