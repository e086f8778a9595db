"""Measured speed-ups for asyncssh's per-packet path (bench/bench_relay.py shows the effect).

* asyncssh 2.x builds a new ``AESGCM`` object, which sets up an OpenSSL cipher context, for
  every packet it seals or opens. One object per key gives the same bytes for less CPU.
* Before every packet past key exchange asyncssh sends an ``SSH_MSG_IGNORE`` packet: RFC 4251
  §9.3.1's countermeasure for CBC, whose next IV an attacker could predict. An AEAD cipher
  (AES-GCM, chacha20-poly1305) takes a fresh nonce per packet and has no chained IV, so under one
  the IGNORE packet only costs a second packet's work each time (OpenSSH sends none); it is
  left out there and kept for every other cipher. The packets one ``send_packet`` call
  produces leave in one transport write: same bytes, same order, half the system calls.
* ``GCMCipher`` returns ciphertext and tag apart, which ``send_packet`` joins again: the keyed
  cipher returns the sealed packet whole (and an empty tag), two 32 KB copies fewer per packet.
* OpenSSH's client leaves Nagle on for non-interactive sessions and writes some handshake
  packets back to back (KEXINIT then ECDH_INIT, NEWKEYS then SERVICE_REQUEST): the second waits
  for the first's ACK, which Linux delays by 40 ms when the gateway has nothing to answer with.
  ``TCP_QUICKACK`` after each of a connection's first reads sends that ACK at once.
* asyncssh keeps received bytes in ``bytes`` and re-slices the remainder after every header and
  every packet, copying a 256 KB read several times over. :class:`RecvBuffer` consumes a prefix
  by moving an offset and compacts once per read.

These reach into asyncssh's internals, so :func:`apply` installs them only on the asyncssh versions
they were measured and tested on (``TESTED_ASYNCSSH``; pyproject.toml pins the same range); any
other version runs unpatched, slower but correct, with one warning. The gateway calls it at start
(``serve``, ``demo``); importing this module changes nothing. tests/unit/test_asyncssh_tuning.py
fingerprints every asyncssh function named in ``REPLACED`` and ``RELIED_ON``, so an upgrade fails
there until someone has read what changed.
"""

from __future__ import annotations

import socket
from typing import Any

import asyncssh
import asyncssh.encryption
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_IGNORE
from asyncssh.encryption import ChachaEncryption, GCMEncryption
from asyncssh.packet import SSHPacketLogger
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sshgate import audit

TESTED_ASYNCSSH = ("2.24.1",)

# What apply() replaces, as "module:qualified.name".
REPLACED = (
    "asyncssh.encryption:GCMCipher",
    "asyncssh.connection:SSHConnection.send_packet",
    "asyncssh.connection:SSHConnection._send",
    "asyncssh.connection:SSHConnection.data_received",
)
# asyncssh code the replacements depend on: where the cipher class is looked up and called, and every
# method that reads ``_inpbuf`` (RecvBuffer offers exactly the operations they use on it).
RELIED_ON = (
    "asyncssh.encryption:GCMEncryption",
    "asyncssh.encryption:ChachaEncryption",
    "asyncssh.connection:SSHConnection._recv_data",
    "asyncssh.connection:SSHConnection._recv_version",
    "asyncssh.connection:SSHConnection._recv_pkthdr",
    "asyncssh.connection:SSHConnection._recv_packet",
    "asyncssh.connection:SSHConnection._finish_recv_packet",
)

_TAG_SIZE = 16
_COUNTER_MASK = (1 << 64) - 1


class KeyedGCMCipher:
    """Drop-in for ``asyncssh.crypto.GCMCipher``: RFC 5647 nonces (fixed part + 64-bit counter)."""

    def __init__(self, cipher_name: str, key: bytes, iv: bytes) -> None:
        self._aead = AESGCM(key)
        self._fixed = iv[:4]
        self._counter = int.from_bytes(iv[4:], "big")

    def _next_nonce(self) -> bytes:
        nonce = self._fixed + self._counter.to_bytes(8, "big")
        self._counter = (self._counter + 1) & _COUNTER_MASK
        return nonce

    def encrypt_and_sign(self, header: bytes, data: bytes) -> tuple[bytes, bytes]:
        """The whole packet (header, ciphertext, tag) and an empty tag: ``send_packet`` sends
        ``packet + mac``, which for an empty ``mac`` is the packet itself, not a copy."""
        return header + self._aead.encrypt(self._next_nonce(), data, header), b""

    def verify_and_decrypt(self, header: bytes, data: bytes, mac: bytes) -> bytes | None:
        try:
            return self._aead.decrypt(self._next_nonce(), data + mac, header)
        except InvalidTag:
            return None


class RecvBuffer:
    """The bytes operations asyncssh's receive path uses, without copying on prefix removal."""

    __slots__ = ("_buf", "_pos")

    def __init__(self, buf: bytearray, pos: int = 0) -> None:
        self._buf = buf
        self._pos = pos

    def __iadd__(self, data: bytes) -> RecvBuffer:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data
        return self

    def __len__(self) -> int:
        return len(self._buf) - self._pos

    def __bool__(self) -> bool:
        return len(self._buf) > self._pos

    def find(self, sub: bytes, start: int, end: int) -> int:
        found = self._buf.find(sub, self._pos + start, self._pos + end)
        return found - self._pos if found >= 0 else -1

    def __getitem__(self, index: slice) -> Any:
        start, stop, _ = index.indices(len(self))
        if index.stop is None:  # ``buf = buf[n:]``: drop a prefix, share the storage
            return RecvBuffer(self._buf, self._pos + start)
        with memoryview(self._buf) as view:
            return bytes(view[self._pos + start : self._pos + stop])


# Reads that acknowledge at once: covers key exchange, authentication and the first channel
# requests, after which a connection is interactive (the client sets TCP_NODELAY) or bulk.
_QUICKACK_READS = 48


def _quickack_socket(conn: Any) -> Any:
    sock = conn._transport.get_extra_info("socket") if conn._transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return sock


def _data_received(self: Any, data: bytes, datatype: object = None) -> None:
    buf = self._inpbuf
    if buf.__class__ is not RecvBuffer:
        self._inpbuf = buf = RecvBuffer(bytearray(buf))
        self._sshgate_quickacks = _QUICKACK_READS
        self._sshgate_sock = _quickack_socket(self)
    if self._sshgate_quickacks and self._sshgate_sock is not None:
        self._sshgate_quickacks -= 1
        self._sshgate_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    buf += data
    self._recv_data()


_AEAD = (GCMEncryption, ChachaEncryption)
_send_packet = SSHConnection.send_packet
_send = SSHConnection._send


def _batched_send_packet(
    self: Any, pkttype: int, *args: bytes, handler: SSHPacketLogger | None = None
) -> None:
    if self._sshgate_batch is not None:  # a nested call: the IGNORE packet, or a rekey's KEXINIT
        if pkttype != MSG_IGNORE or not isinstance(self._send_encryption, _AEAD):
            _send_packet(self, pkttype, *args, handler=handler)
        return
    batch: list[bytes] = []
    self._sshgate_batch = batch
    try:
        _send_packet(self, pkttype, *args, handler=handler)
    finally:
        self._sshgate_batch = None
        if batch:
            _send(self, batch[0] if len(batch) == 1 else b"".join(batch))


def _collecting_send(self: Any, data: bytes) -> None:
    batch = self._sshgate_batch
    if batch is None:
        _send(self, data)
    else:
        batch.append(data)


_warned = False


def apply() -> bool:
    """Install the fixes for every connection this process makes or accepts from now on, if this
    asyncssh is one they were tested on; else warn once and leave asyncssh as it is."""
    global _warned
    if asyncssh.__version__ not in TESTED_ASYNCSSH:
        if not _warned:
            _warned = True
            audit.logger().warning(
                "asyncssh.untuned", version=asyncssh.__version__, tested=list(TESTED_ASYNCSSH)
            )
        return False
    asyncssh.encryption.GCMCipher = KeyedGCMCipher  # type: ignore[assignment,attr-defined]
    SSHConnection._sshgate_batch = None  # type: ignore[attr-defined]
    SSHConnection.send_packet = _batched_send_packet  # type: ignore[method-assign]
    SSHConnection._send = _collecting_send  # type: ignore[method-assign]
    SSHConnection.data_received = _data_received  # type: ignore[method-assign]
    return True
