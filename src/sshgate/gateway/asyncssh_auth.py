"""Two seams asyncssh's server authentication lacks, installed once per process by :func:`install`.

* asyncssh decides a ``publickey`` request itself (authorized keys, certificate principals
  matched as *patterns*, the signature) and tells the server object neither whether the request
  was signed nor which certificate it carried. The gateway needs both: a refused *signed* request
  is a failed attempt while an unsigned query is not, and principals compare as exact strings.
  So every ``publickey`` request goes to the server object's ``public_key_attempt`` as an
  :class:`OfferedKey`, and asyncssh's own matching is not used.
* asyncssh normalizes the user name with SASLprep (NFKC: ``alice`` in full-width letters
  becomes plain ``alice``) and refuses control characters before the server object sees the
  name, so such logins left no ``login.invalid`` event. The name now arrives as sent, and the
  login grammar (printable ASCII only) refuses it with one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import asyncssh
import asyncssh.connection
from asyncssh.packet import String
from asyncssh.public_key import (
    SSHCertificate,
    SSHOpenSSHCertificate,
    decode_ssh_certificate,
    decode_ssh_public_key,
)


@dataclass(frozen=True, slots=True)
class OfferedKey:
    """One ``publickey`` request: the key (a certificate's own key for a certificate), the
    certificate if any (its CA signature already checked), and whether the request was signed.
    ``key`` is None when the blob is neither a known key type nor a well-signed certificate."""

    key: asyncssh.SSHKey | None
    certificate: SSHCertificate | None
    signed: bool
    _signed_data: bytes = field(default=b"", repr=False)
    _signature: bytes = field(default=b"", repr=False)

    def signature_ok(self) -> bool:
        """Whether the request is signed by ``key``; asked only for keys that would be accepted,
        so a stranger's (possibly huge) key costs no signature check."""
        return self.signed and self.key is not None and self.key.verify(self._signed_data, self._signature)


@runtime_checkable
class PublicKeyJudge(Protocol):
    async def public_key_attempt(self, offered: OfferedKey) -> bool:
        """True: an unsigned query gets PK_OK, a signed request authenticates."""


def offered_key(key_data: bytes, session_id: bytes, message: bytes, signature: bytes) -> OfferedKey:
    """Decode a request's key blob as asyncssh would: a certificate first, then a plain key."""
    certificate: SSHCertificate | None = None
    signed_data = String(session_id) + message if message else b""
    try:
        certificate = decode_ssh_certificate(key_data)
        key = certificate.key
    except asyncssh.KeyImportError:
        try:
            key = decode_ssh_public_key(key_data)
        except asyncssh.KeyImportError:
            return OfferedKey(None, None, bool(message))
    key.set_touch_required(True)  # a security key's signature must show user presence
    return OfferedKey(key, certificate, bool(message), signed_data, signature)


_asyncssh_validate_public_key = asyncssh.connection.SSHServerConnection.validate_public_key


async def _validate_public_key(
    self: asyncssh.connection.SSHServerConnection,
    username: str,
    key_data: bytes,
    msg: bytes,
    signature: bytes,
) -> bool:
    owner = self._owner
    if not isinstance(owner, PublicKeyJudge):
        return await _asyncssh_validate_public_key(self, username, key_data, msg, signature)
    offered = offered_key(key_data, self._session_id, msg, signature)
    if not await owner.public_key_attempt(offered):
        return False
    if isinstance(offered.certificate, SSHOpenSSHCertificate):
        # As asyncssh does for certificates it accepts: it enforces force-command and permit-*.
        self._cert_options = offered.certificate.options
    return True


def _name_as_sent(s: str) -> str:
    return s


def install() -> None:
    """Route ``publickey`` requests to :class:`PublicKeyJudge` servers; pass user names unchanged."""
    asyncssh.connection.SSHServerConnection.validate_public_key = _validate_public_key  # type: ignore[method-assign]
    asyncssh.connection.saslprep = _name_as_sent  # type: ignore[attr-defined]
