"""The pure pieces of ssh_packet_path: sealing and opening give asyncssh's bytes, packet lengths and
padding are checked as OpenSSH checks them, and the receive buffer hands out exact views."""

from __future__ import annotations

import os

import pytest
from asyncssh.crypto import GCMCipher
from asyncssh.misc import ProtocolError

from sshgate.ssh_packet_path import (
    BLOCK,
    KeyedGCMCipher,
    RecvBuffer,
    check_packet_length,
    padding_length,
    payload_end,
)


def test_seal_is_asyncssh_s_packet_and_open_reverses_it() -> None:
    key, iv = os.urandom(16), os.urandom(8) + b"\xff\xff\xff\xfe"  # the counter wraps within the test
    ours, theirs = KeyedGCMCipher("aes128-gcm@openssh.com", key, iv), GCMCipher("aes128-gcm", key, iv)
    opener = KeyedGCMCipher("aes128-gcm@openssh.com", key, iv)
    for size in (16, 32, 1024, 32768 + 32, 48):
        plaintext = os.urandom(size)
        packet = ours.seal(plaintext)
        header = size.to_bytes(4, "big")
        assert bytes(packet) == b"".join(theirs.encrypt_and_sign(header, plaintext))
        assert opener.open(memoryview(packet)) == plaintext


def test_a_wrong_tag_is_refused_and_rewind_reuses_the_nonce() -> None:
    key, iv = os.urandom(32), os.urandom(12)
    sender, receiver = KeyedGCMCipher("x", key, iv), KeyedGCMCipher("x", key, iv)
    first, second = sender.seal(b"a" * 32), sender.seal(b"b" * 32)
    tampered = bytearray(first)
    tampered[5] ^= 1
    assert receiver.open(memoryview(tampered)) is None  # the nonce is spent, as the sender's was
    assert receiver.open(memoryview(second)) == b"b" * 32
    receiver.rewind()
    assert receiver.open(memoryview(second)) == b"b" * 32  # opened again, as asyncssh would


@pytest.mark.parametrize("payload", range(1, 80))
def test_padding_fills_whole_blocks_with_at_least_four_bytes(payload: int) -> None:
    padlen = padding_length(payload)
    assert 4 <= padlen < 4 + BLOCK
    assert (1 + payload + padlen) % BLOCK == 0


def test_packet_lengths_are_checked_before_anything_else() -> None:
    check_packet_length(BLOCK, 35000)
    check_packet_length(35000 // BLOCK * BLOCK, 35000)
    with pytest.raises(ProtocolError, match="Max packet size exceeded"):
        check_packet_length(0x7FFFFFF0, 35000)
    for bad in (0, 8, BLOCK + 1, 100):
        with pytest.raises(ProtocolError, match="Invalid packet length"):
            check_packet_length(bad, 35000)


def test_padding_must_be_four_bytes_or_more_and_leave_a_message_type() -> None:
    assert payload_end(bytearray([4]) + bytes(15)) == 12
    assert payload_end(bytearray([14]) + bytes(15)) == 2
    for padlen in (0, 3, 15, 255):
        with pytest.raises(ProtocolError, match="Invalid padding length"):
            payload_end(bytearray([padlen]) + bytes(15))


def test_recv_buffer_views_and_consumes_packets() -> None:
    buf = RecvBuffer(bytearray())
    buf += (20).to_bytes(4, "big") + b"x" * 20 + (3).to_bytes(4, "big")
    assert buf.uint32() == 20
    with buf.packet(24) as packet:
        assert bytes(packet) == (20).to_bytes(4, "big") + b"x" * 20
    buf.consume(24)
    assert len(buf) == 4 and buf.uint32() == 3
    buf += b"more"  # grows after the view was released, compacting what was consumed
    assert len(buf) == 8 and buf[4:8] == b"more"
