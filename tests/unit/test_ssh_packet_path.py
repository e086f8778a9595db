"""The pure pieces of ssh_packet_path: sealing and opening give asyncssh's bytes (AES-GCM and
chacha20-poly1305), packet lengths and padding are checked as OpenSSH checks them, and the receive
buffer hands out exact views."""

from __future__ import annotations

import os

import pytest
from asyncssh.crypto import ChachaCipher, GCMCipher
from asyncssh.misc import ProtocolError

from sshgate.ssh_packet_path import (
    KeyedChachaCipher,
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
    for seq, size in enumerate((16, 32, 1024, 32768 + 32, 48)):
        plaintext = os.urandom(size)
        packet = ours.seal(seq, plaintext)
        header = size.to_bytes(4, "big")
        assert bytes(packet) == b"".join(theirs.encrypt_and_sign(header, plaintext))
        assert opener.packet_length(seq, memoryview(packet)[:4]) == size
        assert opener.open(seq, memoryview(packet)) == plaintext


def test_chacha_seal_is_asyncssh_s_packet_and_open_reverses_it() -> None:
    key = os.urandom(64)
    ours, theirs = KeyedChachaCipher(key), ChachaCipher(key)
    for seq, size in ((0, 8), (1, 16), (7, 1024), (0xFFFFFFFF, 32768 + 24), (3, 40)):
        plaintext = os.urandom(size)
        packet = ours.seal(seq, plaintext)
        nonce = seq.to_bytes(8, "big")
        assert bytes(packet) == b"".join(theirs.encrypt_and_sign(size.to_bytes(4, "big"), plaintext, nonce))
        assert ours.packet_length(seq, memoryview(packet)[:4]) == size
        assert ours.open(seq, memoryview(packet)) == plaintext
        tampered = bytearray(packet)
        tampered[-20] ^= 0x80
        assert ours.open(seq, memoryview(tampered)) is None
        assert ours.open(seq + 1, memoryview(packet)) is None  # another sequence number, another key


def test_a_wrong_tag_is_refused_and_rewind_reuses_the_nonce() -> None:
    key, iv = os.urandom(32), os.urandom(12)
    sender, receiver = KeyedGCMCipher("x", key, iv), KeyedGCMCipher("x", key, iv)
    first, second = sender.seal(0, b"a" * 32), sender.seal(1, b"b" * 32)
    tampered = bytearray(first)
    tampered[5] ^= 1
    assert receiver.open(0, memoryview(tampered)) is None  # the nonce is spent, as the sender's was
    assert receiver.open(1, memoryview(second)) == b"b" * 32
    receiver.rewind()
    assert receiver.open(1, memoryview(second)) == b"b" * 32  # opened again, as asyncssh would


@pytest.mark.parametrize("block", [8, 16])
def test_padding_fills_whole_blocks_with_at_least_four_bytes(block: int) -> None:
    for payload in range(1, 80):
        padlen = padding_length(payload, block)
        assert 4 <= padlen < 4 + block
        assert (1 + payload + padlen) % block == 0


def test_packet_lengths_are_checked_before_anything_else() -> None:
    check_packet_length(16, 35000, 16)
    check_packet_length(35000 // 16 * 16, 35000, 16)
    check_packet_length(8, 35000, 8)
    with pytest.raises(ProtocolError, match="Max packet size exceeded"):
        check_packet_length(0x7FFFFFF0, 35000, 16)
    for bad, block in ((0, 16), (8, 16), (17, 16), (100, 16), (0, 8), (4, 8), (12, 8)):
        with pytest.raises(ProtocolError, match="Invalid packet length"):
            check_packet_length(bad, 35000, block)


def test_padding_must_be_four_bytes_or_more_and_leave_a_message_type() -> None:
    assert payload_end(bytearray([4]) + bytes(15)) == 12
    assert payload_end(bytearray([14]) + bytes(15)) == 2
    for padlen in (0, 3, 15, 255):
        with pytest.raises(ProtocolError, match="Invalid padding length"):
            payload_end(bytearray([padlen]) + bytes(15))


def test_recv_buffer_views_and_consumes_packets() -> None:
    buf = RecvBuffer(bytearray())
    buf += (20).to_bytes(4, "big") + b"x" * 20 + (3).to_bytes(4, "big")
    with buf.packet(24) as packet:
        assert bytes(packet) == (20).to_bytes(4, "big") + b"x" * 20
    buf.consume(24)
    assert len(buf) == 4 and buf[:4] == (3).to_bytes(4, "big")
    buf += b"more"  # grows after the view was released, compacting what was consumed
    assert len(buf) == 8 and buf[4:8] == b"more"
