"""The keyed GCM cipher must produce exactly asyncssh's bytes, packet after packet."""

from __future__ import annotations

import os

from asyncssh.crypto import GCMCipher

from sshgate.asyncssh_tuning import KeyedGCMCipher


def test_same_bytes_as_asyncssh_and_round_trip() -> None:
    key, iv = os.urandom(16), os.urandom(8) + b"\xff\xff\xff\xfe"  # the counter wraps within the test
    ours, theirs = KeyedGCMCipher("aes128-gcm@openssh.com", key, iv), GCMCipher("aes128-gcm", key, iv)
    opener = KeyedGCMCipher("aes128-gcm", key, iv)
    for size in (16, 32, 1024, 32768, 48):
        header, body = os.urandom(4), os.urandom(size)
        sealed = ours.encrypt_and_sign(header, body)
        assert sealed == theirs.encrypt_and_sign(header, body)
        assert opener.verify_and_decrypt(header, sealed[0][4:], sealed[1]) == body


def test_tampered_packet_is_rejected_and_counter_still_advances() -> None:
    key, iv = os.urandom(32), os.urandom(12)
    sender, receiver = KeyedGCMCipher("aes256-gcm@openssh.com", key, iv), KeyedGCMCipher("x", key, iv)
    first = sender.encrypt_and_sign(b"hdr1", b"a" * 32)
    second = sender.encrypt_and_sign(b"hdr2", b"b" * 32)
    assert receiver.verify_and_decrypt(b"hdr1", first[0][4:], bytes(16)) is None
    assert receiver.verify_and_decrypt(b"hdr2", second[0][4:], second[1]) == b"b" * 32


def test_recv_buffer_behaves_like_bytes() -> None:
    from sshgate.asyncssh_tuning import RecvBuffer

    model = b""
    buf = RecvBuffer(bytearray())
    for chunk in (b"SSH-2.0-x\r\nabc", b"defghij", b"", b"klmnop" * 100):
        model += chunk
        buf += chunk
        assert len(buf) == len(model) and bool(buf) == bool(model)
        assert buf.find(b"\n", 0, 256) == model.find(b"\n", 0, 256)
        assert buf[:5] == model[:5] and buf[3:9] == model[3:9]
        model, buf = model[4:], buf[4:]
        assert buf[: len(model)] == model
    model, buf = model[len(model):], buf[len(model):]
    assert not buf and len(buf) == 0


def test_only_a_connections_first_reads_acknowledge_at_once() -> None:
    import socket

    from sshgate.asyncssh_tuning import _QUICKACK_READS, _data_received

    calls: list[tuple[int, int, int]] = []

    class Sock:
        family = socket.AF_INET

        def setsockopt(self, level: int, option: int, value: int) -> None:
            calls.append((level, option, value))

    class Transport:
        def get_extra_info(self, name: str) -> object:
            return Sock() if name == "socket" else None

    class Conn:
        _inpbuf = b""
        _transport = Transport()
        received = 0

        def _recv_data(self) -> None:
            self.received = len(self._inpbuf)

    conn = Conn()
    for _ in range(_QUICKACK_READS + 10):
        _data_received(conn, b"x")
    assert conn.received == _QUICKACK_READS + 10
    assert calls == [(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)] * _QUICKACK_READS
