"""NUL bytes where the upstream reads C strings: an exec command, an environment variable, a
terminal type, a forward's host name. OpenSSH's sshd ends the whole connection over any of them,
so relayed as sent they cut every channel of the client's connection off its upstream, with no
word to the client; and a shell would run less than the policy saw. Each is now refused or
dropped at the gateway, and the connection's next channel still works."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.support.gateway import GatewayProcess, asyncssh_login


@pytest.fixture
def gw(keys: Keys, upstream: Upstream, tmp_path: Path) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(tmp_path / "gw", base_config(keys, upstream)).start()
    yield proc
    proc.stop()


async def _still_served(conn: asyncssh.SSHClientConnection) -> None:
    after = await asyncio.wait_for(conn.run("echo after"), 20)
    assert (after.exit_status, after.stdout, after.stderr) == (0, "after\n", "")


async def test_a_command_with_a_nul_byte_is_refused_with_a_line(gw: GatewayProcess, keys: Keys) -> None:
    async with asyncssh_login(gw, keys.alice) as conn:
        refused = await asyncio.wait_for(conn.run("echo a\0; touch /tmp/sg-nul-ran"), 20)
        assert refused.exit_status == 1
        assert refused.stderr == (
            "sshgate: the command holds a NUL byte, which no remote shell takes; nothing was run\n"
        )
        assert gw.wait_event("command.invalid")
        assert not Path("/tmp/sg-nul-ran").exists()
        await _still_served(conn)


async def test_an_environment_variable_with_a_nul_byte_is_dropped(gw: GatewayProcess, keys: Keys) -> None:
    async with asyncssh_login(gw, keys.alice) as conn:
        env = {"LANG": "C.UTF-8\0evil", "LC_TIME": "C"}
        shown = await asyncio.wait_for(conn.run("echo [$LANG] [$LC_TIME]", env=env), 20)
        assert shown.stdout == "[] [C]\n"  # the rest of the environment still arrives
        await _still_served(conn)


async def test_a_terminal_type_with_a_nul_byte_is_refused_as_a_pty_request(
    gw: GatewayProcess, keys: Keys
) -> None:
    async with asyncssh_login(gw, keys.alice) as conn:
        with pytest.raises(asyncssh.ChannelOpenError, match="PTY request failed"):
            await conn.create_session(asyncssh.SSHClientSession, "true", term_type="xterm\0evil")
        assert gw.wait_event("channel.pty_refused")["reason"] == "terminal type holds a NUL byte"
        await _still_served(conn)


async def test_a_forward_to_a_host_name_with_a_nul_byte_is_refused(
    gw: GatewayProcess, keys: Keys, upstream: Upstream
) -> None:
    async with asyncssh_login(gw, keys.alice) as conn:
        with pytest.raises(asyncssh.ChannelOpenError) as refused:
            await conn.open_connection("127.0.0.1\0evil", upstream.sshd.port)
        assert refused.value.reason == "host name holds a NUL byte"
        assert gw.wait_event("channel.refused", kind="forward")["reason"] == "host name holds a NUL byte"
        await _still_served(conn)
