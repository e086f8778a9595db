"""Requests the gateway refuses leave an audit line and change nothing: a pty asked for after
exec (the policy decided without one, and the upstream runs without one), remote and Unix-socket
forwards, X11 and a subsystem other than sftp (docs/login.md, Binding)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
from asyncssh.packet import String, UInt32

from tests.conftest import Keys, Upstream, base_config
from tests.support.gateway import GatewayProcess, asyncssh_login


@pytest.fixture
def gw(keys: Keys, upstream: Upstream, tmp_path: Path) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(tmp_path / "gw", base_config(keys, upstream)).start()
    yield proc
    proc.stop()


class _Output(asyncssh.SSHClientSession[bytes]):
    def __init__(self) -> None:
        self.out = b""
        self.done = asyncio.Event()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.out += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.done.set()


async def test_a_pty_asked_for_after_exec_is_refused(gw: GatewayProcess, keys: Keys) -> None:
    async with asyncssh_login(gw, keys.alice) as conn:
        chan, session = await conn.create_session(_Output, "sleep 1; tty", encoding=None)
        pty = String(b"xterm") + UInt32(80) + UInt32(24) + UInt32(0) + UInt32(0) + String(b"")
        assert await chan._make_request(b"pty-req", pty) is False
        await asyncio.wait_for(session.done.wait(), 20)
    assert session.out == b"not a tty\n"
    assert gw.wait_event("channel.pty_refused")["reason"] == (
        "pty requested after the shell, exec or subsystem request"
    )
    assert gw.wait_event("channel.open", kind="exec")["pty"] is False


async def test_forwards_the_gateway_does_not_serve_are_refused_and_audited(
    gw: GatewayProcess, keys: Keys
) -> None:
    async with asyncssh_login(gw, keys.alice) as conn:
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_path("/tmp/sg-remote.sock", "/tmp/sg-local.sock")
        with pytest.raises(asyncssh.ChannelOpenError, match="Unix-socket forwarding is not served"):
            await conn.create_unix_connection(asyncssh.SSHUNIXSession, "/run/sshd.sock")
    blocked = gw.wait_events("request.blocked", 3)
    assert [(b["kind"], b.get("host"), b.get("port"), b.get("path")) for b in blocked] == [
        ("remote-forward", "127.0.0.1", 0, None),
        ("streamlocal-forward", None, None, "/tmp/sg-remote.sock"),
        ("streamlocal", None, None, "/run/sshd.sock"),
    ]


async def test_x11_and_other_subsystems_are_refused_and_audited(gw: GatewayProcess, keys: Keys) -> None:
    async with asyncssh_login(gw, keys.alice) as conn:
        with pytest.raises(asyncssh.ChannelOpenError, match="Session request failed"):
            await conn.create_session(_Output, subsystem="netconf")
        _, session = await conn.create_session(
            _Output, "echo ran", x11_forwarding="ignore_failure", x11_display="127.0.0.1:0", encoding=None
        )
        await asyncio.wait_for(session.done.wait(), 20)
        assert session.out == b"ran\n"
    assert gw.wait_event("request.blocked", kind="subsystem")["subsystem"] == "netconf"
    assert gw.wait_event("request.blocked", kind="x11")["screen"] == 0
