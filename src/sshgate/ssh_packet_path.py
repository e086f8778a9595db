"""A lean packet path for asyncssh connections under AES-GCM or chacha20-poly1305 once key exchange
and authentication are done: the packets that carry a session's bytes.

asyncssh's generic path copies a 32 KB channel data packet about seven times on the way in (buffer
slices, header + rest, data + tag, decrypt output, payload slice, string) and as often on the way
out (string, joins, padding, ciphertext + header), and logs every packet even when nobody listens.
Here a received packet is opened straight from the receive buffer (``decrypt_into``,
``update_into``) and a sent one sealed into one fresh buffer that already holds its length header
(fresh per packet because the transport may keep a reference to what it was given).

Only the happy case is handled here; everything else goes through asyncssh's own code unchanged:
other ciphers, key exchange and authentication, compression, a rekey that is due, debug logging,
and every received packet other than well-formed channel data for an open channel within its
window (for those asyncssh opens the packet again, the GCM nonce rewound by one, so its checks
and errors are the ones that apply). Checks that do apply here: the peer's packet length is
refused before anything is allocated for it, a failed tag disconnects (``MACError``), padding must
be at least 4 bytes and the packet a multiple of the block size (as OpenSSH requires), sequence
numbers and rekey byte counts advance as asyncssh advances them. ``asyncssh_tuning.apply``
installs this, on the asyncssh versions it was tested with.
"""

from __future__ import annotations

import os
import time
from typing import Any

from asyncssh.channel import SSHChannel
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_CHANNEL_EXTENDED_DATA, MSG_USERAUTH_LAST
from asyncssh.crypto.chacha import ChachaCipher
from asyncssh.encryption import ChachaEncryption, GCMEncryption
from asyncssh.logging import SSHLogger
from asyncssh.misc import MACError, ProtocolError
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20
from cryptography.hazmat.primitives.poly1305 import Poly1305

TAG = 16  # GCM's and Poly1305's
_COUNTER_MASK = (1 << 64) - 1
_SEQ_MASK = 0xFFFFFFFF
# Offsets in an opened packet (padding length, type, channel, [data type], data length, data).
_DATA_AT = 10
_EXTENDED_DATA_AT = 14


class KeyedGCMCipher:
    """Drop-in for ``asyncssh.crypto.GCMCipher`` (RFC 5647 nonces: fixed part + 64-bit counter) with
    one ``AESGCM`` per key, where asyncssh builds one, an OpenSSL context, per packet."""

    __slots__ = ("_aead", "_counter", "_fixed")
    block = 16

    def __init__(self, cipher_name: str, key: bytes, iv: bytes) -> None:
        self._aead = AESGCM(key)
        self._fixed = iv[:4]
        self._counter = int.from_bytes(iv[4:], "big")

    def _next_nonce(self) -> bytes:
        nonce = self._fixed + self._counter.to_bytes(8, "big")
        self._counter = (self._counter + 1) & _COUNTER_MASK
        return nonce

    def rewind(self) -> None:
        """Step the nonce back by one: the packet just opened is opened again by asyncssh."""
        self._counter = (self._counter - 1) & _COUNTER_MASK

    def encrypt_and_sign(self, header: bytes, data: bytes) -> tuple[bytes, bytes]:
        """The whole packet (header, ciphertext, tag) and an empty tag: ``send_packet`` sends
        ``packet + mac``, which for an empty ``mac`` is the packet itself, not a copy."""
        return header + self._aead.encrypt(self._next_nonce(), data, header), b""

    def verify_and_decrypt(self, header: bytes, data: bytes, mac: bytes) -> bytes | None:
        try:
            return self._aead.decrypt(self._next_nonce(), data + mac, header)
        except InvalidTag:
            return None

    def packet_length(self, seq: int, header: memoryview) -> int:
        """The length field, which GCM leaves in the clear."""
        return int.from_bytes(header, "big")

    def seal(self, seq: int, plaintext: bytes) -> bytearray:
        """The packet as it goes on the wire: length header, ciphertext and tag in one new buffer."""
        header = len(plaintext).to_bytes(4, "big")
        packet = bytearray(4 + len(plaintext) + TAG)
        packet[:4] = header
        with memoryview(packet) as out:
            self._aead.encrypt_into(self._next_nonce(), plaintext, header, out[4:])
        return packet

    def open(self, seq: int, packet: memoryview) -> bytearray | None:
        """The plaintext of a whole wire packet (header, ciphertext, tag), or None if its tag is
        wrong (the nonce is used either way, as the peer's is)."""
        plaintext = bytearray(len(packet) - 4 - TAG)
        try:
            self._aead.decrypt_into(self._next_nonce(), packet[4:], packet[:4], plaintext)
        except InvalidTag:
            return None
        return plaintext


_POLY1305_KEY_BLOCK = bytes(64)  # ChaCha20 block 0: the Poly1305 key, then the payload from block 1


class KeyedChachaCipher(ChachaCipher):
    """asyncssh's ``chacha20-poly1305@openssh.com`` (PROTOCOL.chacha20poly1305 in OpenSSH: the
    length under its own key, the sequence number as nonce), with whole-packet seal and open. One
    ChaCha20 stream gives both the Poly1305 key (block 0) and the payload (from block 1), where
    asyncssh starts a stream for each."""

    block = 8

    def __init__(self, key: bytes) -> None:
        super().__init__(key)
        self._length = Cipher(ChaCha20(self._adkey, bytes(16)), mode=None).encryptor()
        self._payload = Cipher(ChaCha20(self._key, bytes(16)), mode=None).encryptor()

    @staticmethod
    def _at(stream: Any, seq: int) -> Any:
        """The stream restarted for packet ``seq`` (block counter 0, the sequence number as nonce):
        one context per key, where building one costs more than the packet's whole header."""
        stream.reset_nonce(bytes(8) + seq.to_bytes(8, "big"))
        return stream

    def packet_length(self, seq: int, header: memoryview) -> int:
        return int.from_bytes(self._at(self._length, seq).update(header), "big")

    def rewind(self) -> None:
        """Nothing to step back: the nonce is the packet's sequence number."""

    def seal(self, seq: int, plaintext: bytes) -> bytearray:
        """The packet as it goes on the wire: length, ciphertext and tag in one new buffer."""
        size = len(plaintext)
        payload = self._at(self._payload, seq)
        packet = bytearray(4 + size + TAG)
        packet[:4] = self._at(self._length, seq).update(size.to_bytes(4, "big"))
        poly_key = payload.update(_POLY1305_KEY_BLOCK)[:32]
        with memoryview(packet) as out:
            payload.update_into(plaintext, out[4 : 4 + size])
            out[4 + size :] = Poly1305.generate_tag(poly_key, out[: 4 + size])
        return packet

    def open(self, seq: int, packet: memoryview) -> bytearray | None:
        """The plaintext of a whole wire packet, or None if its tag is wrong."""
        end = len(packet) - TAG
        payload = self._at(self._payload, seq)
        poly_key = payload.update(_POLY1305_KEY_BLOCK)[:32]
        try:
            Poly1305.verify_tag(poly_key, packet[:end], bytes(packet[end:]))
        except InvalidSignature:
            return None
        plaintext = bytearray(end - 4)
        payload.update_into(packet[4:end], plaintext)
        return plaintext


class RecvBuffer:
    """The bytes operations asyncssh's receive path uses on ``_inpbuf``, without copying on prefix
    removal (asyncssh re-slices a 256 KB read after every packet), plus the views this path opens
    packets from."""

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

    def packet(self, size: int) -> memoryview:
        """A view of the first ``size`` bytes; release it (``with``) before the buffer grows."""
        with memoryview(self._buf) as view:
            return view[self._pos : self._pos + size]

    def consume(self, size: int) -> None:
        self._pos += size


def padding_length(payload_length: int, block: int) -> int:
    """RFC 4253 §6 for ciphers whose length field is apart (RFC 5647 §7.2, OpenSSH's chacha20):
    padding length, payload and padding fill whole blocks, with at least 4 bytes of padding, as
    asyncssh and OpenSSH pad."""
    padlen = -(1 + payload_length) % block
    return padlen + block if padlen < 4 else padlen


def check_packet_length(pktlen: int, limit: int, block: int) -> None:
    """Refuse a peer's packet length before anything is allocated or awaited for it."""
    if pktlen > limit:
        raise ProtocolError("Max packet size exceeded")
    if pktlen < block or pktlen % block:
        raise ProtocolError("Invalid packet length")


def payload_end(plaintext: bytearray) -> int:
    """Where the payload of an opened packet ends: its padding is at least 4 bytes and leaves at
    least the message type."""
    padlen = plaintext[0]
    if padlen < 4 or padlen > len(plaintext) - 2:
        raise ProtocolError("Invalid padding length")
    return len(plaintext) - padlen


_LEAN_ENCRYPTIONS = (GCMEncryption, ChachaEncryption)
_LEAN_CIPHERS = (KeyedGCMCipher, KeyedChachaCipher)


def _keyed(encryption: object) -> Any:
    """The cipher of an encryption this path seals and opens itself, else None."""
    if encryption.__class__ not in _LEAN_ENCRYPTIONS:
        return None
    cipher: Any = getattr(encryption, "_cipher", None)
    return cipher if cipher.__class__ in _LEAN_CIPHERS else None


_generic_send_packet: Any = SSHConnection.send_packet
_generic_recv_pkthdr: Any = SSHConnection._recv_pkthdr


def install(send_packet: Any) -> None:
    """Route SSHConnection's sends and receives through here; ``send_packet`` is what the generic
    case calls (asyncssh's own, or asyncssh_tuning's batching wrapper of it)."""
    global _generic_send_packet
    _generic_send_packet = send_packet
    SSHConnection.send_packet = _send_packet  # type: ignore[method-assign]
    SSHConnection._recv_pkthdr = _recv_pkthdr  # type: ignore[method-assign]
    SSHChannel.send_packet = _channel_send_packet  # type: ignore[method-assign]


def _send_packet(self: Any, pkttype: int, *args: bytes, handler: Any = None) -> None:
    """asyncssh's ``send_packet`` for a connection message under an AEAD with nothing pending: no
    deferral (kex and auth are done), no IGNORE (AEAD), no rekey due, no compression, no logging."""
    cipher = _keyed(self._send_encryption)
    if (
        cipher is None
        or pkttype <= MSG_USERAUTH_LAST
        or not (self._kex_complete and self._auth_complete)
        or self._compressor is not None
        or self._sshgate_batch is not None
        or self._rekey_bytes_sent >= self._rekey_bytes
        or (self._rekey_seconds and time.monotonic() >= self._rekey_time)
        or SSHLogger._debug_level >= 3
    ):
        _generic_send_packet(self, pkttype, *args, handler=handler)
        return
    padlen = padding_length(sum(map(len, args)) + 1, cipher.block)
    plaintext = b"".join((bytes((padlen, pkttype)), *args, os.urandom(padlen)))
    seq = self._send_seq
    self._send(cipher.seal(seq, plaintext))
    self._send_seq = (seq + 1) & _SEQ_MASK
    self._rekey_bytes_sent += len(plaintext)


def _channel_send_packet(self: Any, pkttype: int, *args: bytes) -> None:
    """``SSHChannel.send_packet`` without joining the payload first (the connection joins it once)."""
    if self._send_chan is None:
        return
    self._conn.send_packet(pkttype, self._send_chan.to_bytes(4, "big"), *args, handler=self)


def _recv_pkthdr(self: Any) -> bool:
    """Receive a whole packet under AES-GCM or chacha20-poly1305; any other cipher, and the header
    of any packet this path leaves to asyncssh, go to asyncssh's ``_recv_pkthdr``."""
    cipher = _keyed(self._recv_encryption)
    buf = self._inpbuf
    if cipher is None or self._decompressor is not None or buf.__class__ is not RecvBuffer:
        return bool(_generic_recv_pkthdr(self))
    if len(buf) < cipher.block:
        return False
    seq = self._recv_seq
    with buf.packet(4) as header:
        pktlen = cipher.packet_length(seq, header)
    check_packet_length(pktlen, self._max_recv_pktlen, cipher.block)
    size = 4 + pktlen + TAG
    if len(buf) < size:
        return False
    with buf.packet(size) as packet:
        plaintext = cipher.open(seq, packet)
    if plaintext is None:
        raise MACError("MAC verification failed")
    end = payload_end(plaintext)
    if _deliver_channel_data(self, plaintext, end):
        buf.consume(size)
        self._auth_final = True
        if self._transport:
            self._recv_seq = (seq + 1) & _SEQ_MASK
        return True
    cipher.rewind()
    return bool(_generic_recv_pkthdr(self))


def _deliver_channel_data(self: Any, plaintext: bytearray, end: int) -> bool:
    """Hand channel data to its channel as asyncssh's ``_process_data`` and
    ``_process_extended_data`` would, if this is well-formed data asyncssh would accept without a
    word to log; False leaves the packet to asyncssh."""
    pkttype = plaintext[1]
    if pkttype == MSG_CHANNEL_DATA:
        start, datatype = _DATA_AT, None
    elif pkttype == MSG_CHANNEL_EXTENDED_DATA:
        start = _EXTENDED_DATA_AT
        datatype = int.from_bytes(plaintext[10:14], "big") if end >= start else None
    else:
        return False
    if end < start or not self._auth_complete or SSHLogger._debug_level >= 2:
        return False
    chan = self._channels.get(int.from_bytes(plaintext[2:6], "big"))
    length = int.from_bytes(plaintext[start - 4 : start], "big")
    if (
        chan is None
        or chan._packet_handlers is not _CHANNEL_HANDLERS
        or chan._recv_state != "open"
        or length != end - start
        or length > chan._recv_window
        or (datatype is not None and datatype not in chan._read_datatypes)
    ):
        return False
    with memoryview(plaintext) as view:
        data = bytes(view[start:end])
    chan._accept_data(data, datatype)
    return True


_CHANNEL_HANDLERS = SSHChannel._packet_handlers
