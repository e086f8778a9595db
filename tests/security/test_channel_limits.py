"""The channels of one authenticated connection: one channel's end does not disturb the setup the
connection's next channel waits on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.support.gateway import GatewayProcess


@pytest.fixture
def gw(keys: Keys, upstream: Upstream, tmp_path: Path) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(tmp_path / "gw", base_config(keys, upstream)).start()
    yield proc
    proc.stop()


def connect(gw: GatewayProcess, keys: Keys) -> asyncssh.SSHClientConnection:
    return asyncssh.connect(  # type: ignore[return-value]
        "127.0.0.1", gw.port, username="alice+web-1", client_keys=[str(keys.alice)],
        known_hosts=None, agent_path=None, config=None,
    )  # fmt: skip


async def test_a_channel_closed_while_the_connection_binds_leaves_the_next_one_working(
    gw: GatewayProcess, keys: Keys
) -> None:
    """Closed before the upstream connected, a first channel used to cancel the connection's
    binding with it, and every later channel of the connection waited forever."""
    async with connect(gw, keys) as conn:
        first = await conn.create_process("sleep 30")
        first.close()
        await first.wait_closed()
        result = await asyncio.wait_for(conn.run("echo next", check=True), 20)
        assert result.stdout == "next\n"
