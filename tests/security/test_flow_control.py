"""A logged-in client that ignores flow control, sending raw packets past asyncssh's own
accounting: data beyond the window the gateway advertised, a packet over the channel's maximum
packet size, extended data the session does not take, data for a channel that was never opened
or is closed, a window adjust past 2^32 - 1. Each ends that client's connection as a protocol
error with the reason in the audit log, relays nothing past what the windows allowed, and leaves
the gateway serving everyone else. Every case runs under AES-GCM and chacha20-poly1305
(ssh_packet_path's lean receive path) and aes128-ctr (asyncssh's own)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_CHANNEL_EXTENDED_DATA, MSG_CHANNEL_WINDOW_ADJUST
from asyncssh.packet import String, UInt32

from tests.conftest import Keys
from tests.security.attacker import CIPHERS, LOGIN, Hostile, hostile_session
from tests.support.gateway import Client, GatewayProcess

IDS = [c for c, _ in CIPHERS]
PACKET = 32768  # the maximum packet size the gateway announces for a channel (asyncssh's default)
WINDOW = 2 * 1024 * 1024  # the window it announces; OpenSSH's sshd announces the same upstream
READY = b"ready\n"

Attack = Callable[[Any, Any, Hostile], Awaitable[int]]


def rss_kib(gateway: GatewayProcess) -> int:
    assert gateway.process is not None
    status = Path(f"/proc/{gateway.process.pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))


def data(chan: Any, payload: bytes) -> tuple[bytes, ...]:
    return UInt32(chan._send_chan), String(payload)


def run_attack(
    gateway: GatewayProcess, keys: Keys, cipher: str, mac: str, command: str, attack: Attack
) -> tuple[Hostile, int]:
    """Log in, start ``command`` (which prints ``ready`` once it has read a first 7 bytes, so the
    upstream channel is in place), run ``attack`` on the connection and channel, and wait for the
    gateway to end the connection. Returns the client and how many bytes the attack sent."""

    async def go() -> tuple[Hostile, int]:
        conn, hostile = await hostile_session(gateway, keys, cipher, mac)
        proc = await conn.create_process(f"head -c 7 >/dev/null; echo ready; {command}", encoding=None)
        proc.stdin.write(b"warm-up")
        assert await asyncio.wait_for(proc.stdout.readexactly(len(READY)), 10) == READY
        sent = await attack(conn, proc.channel, hostile)
        await asyncio.wait_for(hostile.gone.wait(), 15)
        return hostile, sent

    return asyncio.run(go())


def refused(gateway: GatewayProcess, hostile: Hostile, reason: str, ended_before: int) -> dict[str, Any]:
    """The client was disconnected for ``reason`` (or reset: the gateway closed with the attack's
    bytes unread) and the audit log's session end says why; returns the channel's close line."""
    if isinstance(hostile.lost, asyncssh.Error):
        assert reason in hostile.lost.reason
    else:
        assert isinstance(hostile.lost, (ConnectionResetError, BrokenPipeError)), hostile.lost
    ended = gateway.wait_events("session.end", ended_before + 1, error=reason)[-1]
    closes = [c for c in gateway.events("channel.close") if c["session_id"] == ended["session_id"]]
    assert closes, "the attacked channel's close is not in the audit log"
    assert not [line for line in gateway.raw if "Traceback" in line]
    return closes[-1]


def still_serving(alice: Client) -> None:
    assert alice.ssh(LOGIN, "echo still-serving").stdout == b"still-serving\n"


@pytest.mark.parametrize(("cipher", "mac"), CIPHERS, ids=IDS)
def test_data_past_the_window_ends_the_connection_and_is_not_relayed(
    gateway: GatewayProcess, keys: Keys, alice: Client, remote_dir: Path, cipher: str, mac: str
) -> None:
    # The upstream reads nothing for a while: its window fills, the relay stops reading the client,
    # and from then on the gateway's window to the client only shrinks.
    target = remote_dir / "upload"
    before = rss_kib(gateway)

    async def flood(conn: Any, chan: Any, hostile: Hostile) -> int:
        sent = 0
        for i in range(64 * 1024 * 1024 // PACKET):  # 64 MiB, far past every window on the way
            if hostile.gone.is_set():
                break
            conn.send_packet(MSG_CHANNEL_DATA, *data(chan, b"x" * PACKET))
            sent += PACKET
            if i % 16 == 15:
                await asyncio.sleep(0.005)  # let the gateway's answer (its DISCONNECT) arrive
        return sent

    ended = len(gateway.events("session.end", error="Window exceeded"))
    hostile, sent = run_attack(gateway, keys, cipher, mac, f"sleep 3; cat > {target}", flood)
    close = refused(gateway, hostile, "Window exceeded", ended)
    # Relayed: at most what the upstream's window and the gateway's own buffering took, and the
    # client's window's worth beyond was never passed on.
    assert close["bytes_in"] <= 7 + 2 * WINDOW
    assert sent >= close["bytes_in"] + WINDOW
    assert rss_kib(gateway) - before < 32 * 1024
    still_serving(alice)


async def oversized(conn: Any, chan: Any, hostile: Hostile) -> int:
    """One data packet six times the channel's maximum packet size, yet well within the window
    and the connection's packet limit (256 KiB)."""
    conn.send_packet(MSG_CHANNEL_DATA, *data(chan, b"x" * 200_000))
    return 200_000


async def stderr(conn: Any, chan: Any, hostile: Hostile) -> int:
    """Extended data past the window: a session channel reads none from a client at all."""
    for _ in range(2 * WINDOW // PACKET):
        conn.send_packet(MSG_CHANNEL_EXTENDED_DATA, UInt32(chan._send_chan), UInt32(1), String(b"e" * PACKET))
    return 2 * WINDOW


@pytest.mark.parametrize(
    ("attack", "reason"),
    [(oversized, "Channel max packet size exceeded"), (stderr, "Invalid extended data type")],
    ids=["over-max-packet-size", "extended-data"],
)
@pytest.mark.parametrize(("cipher", "mac"), CIPHERS, ids=IDS)
def test_a_packet_the_channel_does_not_take_ends_the_connection_and_is_not_relayed(
    gateway: GatewayProcess,
    keys: Keys,
    alice: Client,
    remote_dir: Path,
    cipher: str,
    mac: str,
    attack: Attack,
    reason: str,
) -> None:
    target = remote_dir / "upload"
    ended = len(gateway.events("session.end", error=reason))
    hostile, _ = run_attack(gateway, keys, cipher, mac, f"cat > {target}", attack)
    assert refused(gateway, hostile, reason, ended)["bytes_in"] == 7
    time.sleep(0.5)  # anything relayed would have reached the file by now
    assert target.read_bytes() == b""
    still_serving(alice)


@pytest.mark.parametrize("closed", [False, True], ids=["never-opened", "closed"])
@pytest.mark.parametrize(("cipher", "mac"), CIPHERS, ids=IDS)
def test_data_for_a_channel_not_open_ends_the_connection(
    gateway: GatewayProcess, keys: Keys, alice: Client, remote_dir: Path, cipher: str, mac: str, closed: bool
) -> None:
    target = remote_dir / "upload"

    async def stray(conn: Any, chan: Any, hostile: Hostile) -> int:
        number = chan._send_chan + 7
        if closed:
            other = await conn.create_process("true", encoding=None)
            number = other.channel._send_chan
            await other.wait_closed()
        conn.send_packet(MSG_CHANNEL_DATA, UInt32(number), String(b"x" * 1000))
        return 1000

    ended = len(gateway.events("session.end"))
    hostile, _ = run_attack(gateway, keys, cipher, mac, f"cat > {target}", stray)
    # A channel just closed may still be winding down in the gateway's table
    reasons = ("Invalid channel number", "Channel not open for sending")
    assert isinstance(hostile.lost, asyncssh.ProtocolError)
    assert hostile.lost.reason.startswith(reasons)
    end = gateway.wait_events("session.end", ended + 1)[-1]
    assert end["error"] == hostile.lost.reason
    assert not [line for line in gateway.raw if "Traceback" in line]
    time.sleep(0.5)
    assert target.read_bytes() == b""
    still_serving(alice)


@pytest.mark.parametrize(("cipher", "mac"), CIPHERS, ids=IDS)
def test_a_window_adjust_past_2_32_ends_the_connection(
    gateway: GatewayProcess, keys: Keys, alice: Client, cipher: str, mac: str
) -> None:
    async def overflow(conn: Any, chan: Any, hostile: Hostile) -> int:
        # The gateway's window towards the client is what the client announced, 2 MiB, less the
        # few bytes it sent; one adjust of 2^32 - 1 takes it past the limit.
        conn.send_packet(MSG_CHANNEL_WINDOW_ADJUST, UInt32(chan._send_chan), UInt32(0xFFFFFFFF))
        return 0

    ended = len(gateway.events("session.end", error="Window adjust overflows the window"))
    hostile, _ = run_attack(gateway, keys, cipher, mac, "sleep 30", overflow)
    refused(gateway, hostile, "Window adjust overflows the window", ended)
    still_serving(alice)
