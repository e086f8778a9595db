"""Measured speed-ups for asyncssh's per-packet path (bench/bench_relay.py shows the effect).

* asyncssh 2.x builds a new ``AESGCM`` object, which sets up an OpenSSL cipher context, for
  every packet it seals or opens. One object per key (``ssh_packet_path.KeyedGCMCipher``) gives
  the same bytes for less CPU.
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
  every packet, copying a 256 KB read several times over. ``ssh_packet_path.RecvBuffer``
  consumes a prefix by moving an offset and compacts once per read.
* The writes a read causes (to the same peer, or to the other leg of a relay) leave in one
  ``writelines`` (writev) per transport once the read is handled, not one system call a packet.
* Under AES-GCM or chacha20-poly1305 after authentication, channel data packets take
  ``ssh_packet_path``'s lean path
  (opened from and sealed into one buffer each, no generic dispatch or logging work); every other
  packet and cipher keeps asyncssh's code.

These reach into asyncssh's internals, so :func:`apply` installs them only on the asyncssh versions
they were measured and tested on (``TESTED_ASYNCSSH``; pyproject.toml pins the same range); any
other version runs unpatched, slower but correct, with one warning. The gateway calls it at start
(``serve``, ``demo``); importing this module changes nothing. tests/unit/test_asyncssh_tuning.py
fingerprints every asyncssh function named in ``REPLACED`` and ``RELIED_ON``, so an upgrade fails
there until someone has read what changed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import asyncssh
import asyncssh.encryption
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_IGNORE
from asyncssh.encryption import ChachaEncryption, GCMEncryption
from asyncssh.packet import SSHPacketLogger

from sshgate import audit, ssh_packet_path
from sshgate.ssh_packet_path import KeyedChachaCipher, KeyedGCMCipher, RecvBuffer

TESTED_ASYNCSSH = ("2.24.1",)

# What apply() replaces, as "module:qualified.name".
REPLACED = (
    "asyncssh.encryption:GCMCipher",
    "asyncssh.encryption:ChachaCipher",
    "asyncssh.connection:SSHConnection.send_packet",
    "asyncssh.connection:SSHConnection._send",
    "asyncssh.connection:SSHConnection.data_received",
    "asyncssh.connection:SSHConnection._recv_pkthdr",
    "asyncssh.channel:SSHChannel.send_packet",
)
# asyncssh code the replacements depend on: where the cipher class is looked up and called, every
# method that reads ``_inpbuf`` (RecvBuffer offers exactly the operations they use on it), and what
# ssh_packet_path does in asyncssh's place for channel data (dispatch, checks, delivery, logging).
RELIED_ON = (
    "asyncssh.encryption:GCMEncryption",
    "asyncssh.encryption:ChachaEncryption",
    "asyncssh.connection:SSHConnection._recv_data",
    "asyncssh.connection:SSHConnection._recv_version",
    "asyncssh.connection:SSHConnection._recv_packet",
    "asyncssh.connection:SSHConnection._finish_recv_packet",
    "asyncssh.connection:SSHConnection._send_kexinit",
    "asyncssh.channel:SSHChannel._flush_send_buf",
    "asyncssh.channel:SSHChannel._process_data",
    "asyncssh.channel:SSHChannel._process_extended_data",
    "asyncssh.channel:SSHChannel._accept_data",
    "asyncssh.packet:SSHPacketHandler.process_packet",
    "asyncssh.packet:SSHPacketLogger._log_packet",
    "asyncssh.logging:SSHLogger.packet",
    "asyncssh.logging:SSHLogger.debug2",
)

# Reads that acknowledge at once: covers key exchange, authentication and the first channel
# requests, after which a connection is interactive (the client sets TCP_NODELAY) or bulk.
_QUICKACK_READS = 48


def _quickack_socket(conn: Any) -> Any:
    sock = conn._transport.get_extra_info("socket") if conn._transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return sock


# While a connection handles what it read, the writes that causes (to its own peer, or to the other
# leg of a relay) are held per transport and leave in one writev each when it is done: a 256 KB read
# of eight data packets becomes one write to the other leg, not eight. Nothing waits for a later
# event; asyncssh never closes a transport within a callback (``_force_close`` aborts it soon).
class _Held(threading.local):
    """Per thread, as each thread runs its own event loop."""

    writes: dict[Any, list[bytes]] | None = None


_held = _Held()


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
    if _held.writes is not None:
        self._recv_data()
        return
    held: dict[Any, list[bytes]] = {}
    _held.writes = held
    try:
        self._recv_data()
    finally:
        _held.writes = None
        for transport, chunks in held.items():
            with contextlib.suppress(ConnectionError):  # as asyncssh's _send
                transport.writelines(chunks)


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
            _held_send(self, batch[0] if len(batch) == 1 else b"".join(batch))


def _held_send(self: Any, data: bytes) -> None:
    held, transport = _held.writes, self._transport
    if held is None or transport is None:
        _send(self, data)
    elif (chunks := held.get(transport)) is None:
        held[transport] = [data]
    else:
        chunks.append(data)


def _collecting_send(self: Any, data: bytes) -> None:
    batch = self._sshgate_batch
    if batch is None:
        _held_send(self, data)
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
    asyncssh.encryption.ChachaCipher = KeyedChachaCipher  # type: ignore[attr-defined]
    SSHConnection._sshgate_batch = None  # type: ignore[attr-defined]
    SSHConnection._send = _collecting_send  # type: ignore[method-assign]
    SSHConnection.data_received = _data_received  # type: ignore[method-assign]
    ssh_packet_path.install(_batched_send_packet)
    return True
