"""Revoked keys and certificates, in OpenSSH's ``RevokedKeys`` formats (docs/configuration.md).

The file is either a key revocation list made by ``ssh-keygen -k`` (PROTOCOL.krl: certificates
by serial, serial range or bitmap and by key id, per CA or for any CA; keys by blob, SHA-1 or
SHA-256 digest) or a text file of public keys, one per line. As in sshd, a revoked key also
revokes every certificate of that key, and a revoked CA key every certificate it signed. The
KRL's own signature sections are not checked: the file is trusted like the configuration.
Parsing and checks are pure; :class:`RevokedKeysFile` is the I/O edge.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import asyncssh
from asyncssh.packet import PacketDecodeError, SSHPacket
from asyncssh.public_key import SSHOpenSSHCertificate

from sshgate.config import ConfigError

KRL_MAGIC = 0x5353484B524C0A00
KRL_FORMAT_VERSION = 1
_CERTIFICATES, _EXPLICIT_KEY, _FINGERPRINT_SHA1, _SIGNATURE, _FINGERPRINT_SHA256 = 1, 2, 3, 4, 5
_SERIAL_LIST, _SERIAL_RANGE, _SERIAL_BITMAP, _KEY_ID = 0x20, 0x21, 0x22, 0x23
MAX_BITMAP_BITS = 1 << 24  # ssh-keygen writes bitmaps for dense runs; a larger one is no real KRL


class RevokedKeysError(ConfigError):
    """The file is neither a KRL nor a list of public keys (at start-up or reload: the
    configuration is refused)."""


@dataclass
class _CertRevocations:
    """Certificates revoked under one CA (or any CA)."""

    serials: set[int] = field(default_factory=set)
    ranges: list[tuple[int, int]] = field(default_factory=list)
    key_ids: set[str] = field(default_factory=set)

    def covers(self, serial: int, key_id: str) -> str | None:
        if key_id in self.key_ids:
            return f"key id {key_id!r} revoked"
        if serial == 0:  # as in OpenSSH: serial 0 means "no serial" and is never revoked by one
            return None
        if serial in self.serials or any(lo <= serial <= hi for lo, hi in self.ranges):
            return f"serial {serial} revoked"
        return None


@dataclass
class RevokedKeys:
    blobs: set[bytes] = field(default_factory=set)
    sha1s: set[bytes] = field(default_factory=set)
    sha256s: set[bytes] = field(default_factory=set)
    by_ca: dict[bytes, _CertRevocations] = field(default_factory=dict)  # b"": any CA

    def why(self, key: asyncssh.SSHKey, certificate: asyncssh.SSHCertificate | None) -> str | None:
        """Why ``key`` (a certificate's own key when ``certificate`` is given) is revoked, or None."""
        reason = self._key(key.public_data, "key")
        if reason is not None or not isinstance(certificate, SSHOpenSSHCertificate):
            return reason  # only OpenSSH certificates are accepted at all (user_certificates.py)
        signer = certificate.signing_key.public_data
        reason = self._key(signer, "certificate authority")
        if reason is not None:
            return reason
        for ca in (signer, b""):
            revoked = self.by_ca.get(ca)
            found = revoked.covers(certificate._serial, certificate._key_id) if revoked else None
            if found is not None:
                return f"certificate {found}"
        return None

    def _key(self, blob: bytes, what: str) -> str | None:
        if blob in self.blobs:
            return f"{what} revoked"
        sha1 = hashlib.sha1(blob, usedforsecurity=False).digest()
        if sha1 in self.sha1s or hashlib.sha256(blob).digest() in self.sha256s:
            return f"{what} revoked (by fingerprint)"
        return None


def parse_revoked_keys(data: bytes) -> RevokedKeys:
    """A KRL (by its magic number) or a text list of public keys; :class:`RevokedKeysError` else."""
    if data[:8] == KRL_MAGIC.to_bytes(8, "big"):
        try:
            return _parse_krl(SSHPacket(data))
        except (PacketDecodeError, ValueError) as exc:
            raise RevokedKeysError(f"not a valid key revocation list: {exc}") from None
    return _parse_key_list(data)


def _parse_key_list(data: bytes) -> RevokedKeys:
    revoked = RevokedKeys()
    for number, raw in enumerate(data.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        try:
            key = asyncssh.import_public_key(line)
        except (asyncssh.KeyImportError, ValueError, UnicodeDecodeError):
            raise RevokedKeysError(f"line {number} is not a public key") from None
        revoked.blobs.add(key.public_data)
    return revoked


def _parse_krl(packet: SSHPacket) -> RevokedKeys:
    packet.get_uint64()  # magic, checked by the caller
    if (version := packet.get_uint32()) != KRL_FORMAT_VERSION:
        raise ValueError(f"format version {version}")
    packet.get_uint64()  # krl_version
    packet.get_uint64()  # generated_date
    packet.get_uint64()  # flags
    packet.get_string()  # reserved
    packet.get_string()  # comment
    revoked = RevokedKeys()
    while packet:
        kind, section = packet.get_byte(), SSHPacket(packet.get_string())
        if kind == _SIGNATURE:
            break  # signature sections come last and sign what came before
        if kind == _CERTIFICATES:
            _parse_certificates(section, revoked)
            continue
        target = {_EXPLICIT_KEY: revoked.blobs, _FINGERPRINT_SHA1: revoked.sha1s,
                  _FINGERPRINT_SHA256: revoked.sha256s}.get(kind)  # fmt: skip
        if target is None:
            raise ValueError(f"unknown section type {kind}")
        while section:
            target.add(section.get_string())
    return revoked


def _parse_certificates(section: SSHPacket, revoked: RevokedKeys) -> None:
    ca = section.get_string()  # the CA's key blob, as a certificate's signing_key.public_data
    section.get_string()  # reserved
    entry = revoked.by_ca.setdefault(ca, _CertRevocations())
    while section:
        kind, data = section.get_byte(), SSHPacket(section.get_string())
        if kind == _SERIAL_LIST:
            while data:
                entry.serials.add(data.get_uint64())
        elif kind == _SERIAL_RANGE:
            lo, hi = data.get_uint64(), data.get_uint64()
            if lo > hi:
                raise ValueError(f"serial range {lo}-{hi}")
            entry.ranges.append((lo, hi))
            data.check_end()
        elif kind == _SERIAL_BITMAP:
            offset, bitmap = data.get_uint64(), data.get_mpint()
            if bitmap < 0 or bitmap.bit_length() > MAX_BITMAP_BITS:
                raise ValueError("serial bitmap out of range")
            entry.serials.update(offset + bit for bit in range(bitmap.bit_length()) if bitmap >> bit & 1)
            data.check_end()
        elif kind == _KEY_ID:
            while data:
                entry.key_ids.add(data.get_string().decode("utf-8", "surrogateescape"))
        else:
            raise ValueError(f"unknown certificate section type {kind:#x}")


class RevokedKeysFile:
    """``identities.revoked_keys``, re-read when the file changes, as sshd reads it at each
    login: a key revoked by editing the file is refused at the next attempt, no reload needed.
    A file that can no longer be read or parsed refuses every key (as sshd does), never none."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._revoked: RevokedKeys | RevokedKeysError = RevokedKeys()
        if path is not None:
            self._load()
            if isinstance(self._revoked, RevokedKeysError):
                raise self._revoked

    def _load(self) -> None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._stamp:
                return
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as exc:
            self._stamp, self._revoked = None, RevokedKeysError(f"{self.path}: cannot read: {exc.strerror}")
            return
        self._stamp = stamp
        try:
            self._revoked = parse_revoked_keys(data)
        except RevokedKeysError as exc:
            self._revoked = RevokedKeysError(f"{self.path}: {exc}")

    def why(self, key: asyncssh.SSHKey, certificate: asyncssh.SSHCertificate | None) -> str | None:
        """Why the key may not log in (revoked, or the list is unusable), or None."""
        if self.path is None:
            return None
        self._load()
        if isinstance(self._revoked, RevokedKeysError):
            return f"revoked_keys unusable, every key refused ({self._revoked})"
        return self._revoked.why(key, certificate)
