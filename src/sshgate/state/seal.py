"""Records in the shared store carry an HMAC, so write access to the store alone binds no key and
locks nobody out; live output is encrypted as well as authenticated. Pure: no I/O.

A sealed record is ``<hex HMAC-SHA256>.<compact JSON>``; the MAC covers the record's context
(what it is and which key it belongs to) as well as its body, so a valid record copied under
another key does not verify. The web app's records (sessions, sign-ins in flight) hold secrets
(CSRF token, PKCE verifier): they are sealed private, AES-GCM with the context as associated data.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_MAC_HEX = 64
_NONCE = 12


def same_secret(got: str, want: str) -> bool:
    """Constant-time equality for text a client sent (a state, a CSRF header): ``hmac``'s own
    raises TypeError on non-ASCII text, which a hostile request would turn into a 500."""
    return hmac.compare_digest(got.encode("utf-8", "surrogatepass"), want.encode("utf-8", "surrogatepass"))


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"sshgate state " + purpose).derive(
        secret
    )


class Sealer:
    """Seals and opens records under ``state.hmac_key``; the key itself is never stored or sent."""

    def __init__(self, secret: str) -> None:
        raw = secret.encode()
        self._mac_key = _derive(raw, b"records")
        self._output = AESGCM(_derive(raw, b"output"))
        self._private = AESGCM(_derive(raw, b"private records"))

    def _mac(self, context: str, body: str) -> str:
        message = context.encode() + b"\0" + body.encode()
        return hmac.new(self._mac_key, message, hashlib.sha256).hexdigest()

    def seal(self, context: str, doc: dict[str, Any]) -> str:
        body = json.dumps(doc, separators=(",", ":"), sort_keys=True)
        return f"{self._mac(context, body)}.{body}"

    def open(self, context: str, sealed: str | bytes | None) -> dict[str, Any] | None:
        """The record's document, or None when it is missing, malformed or not sealed by us."""
        if sealed is None:
            return None
        text = sealed.decode("utf-8", "replace") if isinstance(sealed, bytes) else sealed
        mac, dot, body = text.partition(".")
        if not dot or len(mac) != _MAC_HEX or not same_secret(mac, self._mac(context, body)):
            return None
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    def encrypt(self, context: str, data: bytes) -> bytes:
        return _encrypt(self._output, context, data)

    def decrypt(self, context: str, frame: bytes) -> bytes | None:
        return _decrypt(self._output, context, frame)

    def seal_private(self, context: str, doc: dict[str, Any]) -> bytes:
        """A record nobody without the key can read or forge (the web app's, docs/api.md)."""
        return _encrypt(self._private, context, json.dumps(doc, separators=(",", ":")).encode())

    def open_private(self, context: str, sealed: bytes | None) -> dict[str, Any] | None:
        """The document, or None when missing, not sealed by us or sealed for another context."""
        data = _decrypt(self._private, context, sealed) if sealed is not None else None
        if data is None:
            return None
        try:
            doc = json.loads(data)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None


def _encrypt(aead: AESGCM, context: str, data: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + aead.encrypt(nonce, data, context.encode())


def _decrypt(aead: AESGCM, context: str, frame: bytes) -> bytes | None:
    if len(frame) < _NONCE + 16:
        return None
    try:
        return aead.decrypt(frame[:_NONCE], frame[_NONCE:], context.encode())
    except InvalidTag:
        return None
