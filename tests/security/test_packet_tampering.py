"""A client that tampers with its own packets after logging in: a flipped ciphertext byte ends the
connection with nothing of that packet relayed, and a packet length beyond the limit is refused as
soon as its four bytes arrive, before the gateway waits for (or sets aside room for) the rest."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from asyncssh.crypto.chacha import chacha20

from tests.conftest import Keys
from tests.security.attacker import CIPHERS, LOGIN, Hostile, hostile_session
from tests.support.gateway import Client, GatewayProcess


def length_field(conn: Any, length: int) -> bytes:
    """A packet length as this client's cipher sends it (chacha20-poly1305 encrypts it under its
    own key, with the sequence number as nonce; the others send it in the clear)."""
    cipher = conn._send_encryption._cipher
    field = length.to_bytes(4, "big")
    if hasattr(cipher, "decrypt_header"):  # asyncssh's ChachaCipher
        return bytes(chacha20(cipher._adkey, field, conn._send_seq.to_bytes(8, "big"), 0))
    return field


CHUNK = 100_000


async def wait_for_size(path: Path, size: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size >= size):
        assert time.monotonic() < deadline, f"{path} never reached {size} bytes"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(("cipher", "mac"), CIPHERS, ids=[c for c, _ in CIPHERS])
def test_a_flipped_ciphertext_byte_closes_the_connection_and_relays_nothing(
    gateway: GatewayProcess, keys: Keys, alice: Client, remote_dir: Path, cipher: str, mac: str
) -> None:
    target = remote_dir / "upload"

    async def attack() -> Hostile:
        conn, hostile = await hostile_session(gateway, keys, cipher, mac)
        proc = await conn.create_process(f"cat > {target}", encoding=None)
        proc.stdin.write(b"a" * CHUNK)
        await proc.stdin.drain()
        await wait_for_size(target, CHUNK)
        transport = conn._transport
        write = transport.write

        def corrupting(data: bytes) -> None:
            if len(data) > 1024:  # the channel data packet (not an IGNORE asyncssh sends first)
                transport.write = write
                tampered = bytearray(data)
                tampered[4] ^= 0x01  # the first byte after the length (which the tag covers too)
                data = bytes(tampered)
            write(data)

        transport.write = corrupting
        proc.stdin.write(b"b" * CHUNK)
        await asyncio.wait_for(hostile.gone.wait(), 15)
        return hostile

    hostile = asyncio.run(attack())
    # The gateway's DISCONNECT says why, unless its close reset the connection first (it had not
    # read what the client sent after the bad packet, so the kernel answers with RST)
    if isinstance(hostile.lost, asyncssh.Error):
        assert "MAC verification failed" in hostile.lost.reason
    else:
        assert isinstance(hostile.lost, (ConnectionResetError, BrokenPipeError)), hostile.lost
    time.sleep(0.5)  # anything relayed after the refusal would have reached the file by now
    assert target.read_bytes() == b"a" * CHUNK
    assert alice.ssh(LOGIN, "echo still-serving").stdout == b"still-serving\n"


@pytest.mark.parametrize(("cipher", "mac"), CIPHERS, ids=[c for c, _ in CIPHERS])
def test_an_oversized_packet_length_is_refused_before_the_packet(
    gateway: GatewayProcess, keys: Keys, alice: Client, cipher: str, mac: str
) -> None:
    async def attack() -> tuple[Hostile, float]:
        conn, hostile = await hostile_session(gateway, keys, cipher, mac)
        proc = await conn.create_process("cat", encoding=None)
        proc.stdin.write(b"warm-up")
        assert await asyncio.wait_for(proc.stdout.readexactly(7), 10) == b"warm-up"
        start = time.monotonic()
        # 2 GB announced, one block sent: a gateway that waited for the rest would sit here
        conn._transport.write(length_field(conn, 0x7FFFFFF0) + bytes(12))
        await asyncio.wait_for(hostile.gone.wait(), 15)
        return hostile, time.monotonic() - start

    hostile, took = asyncio.run(attack())
    assert isinstance(hostile.lost, asyncssh.Error)
    assert "Max packet size exceeded" in hostile.lost.reason
    assert took < 5
    assert alice.ssh(LOGIN, "echo still-serving").stdout == b"still-serving\n"
