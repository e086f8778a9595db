"""Proof Key for Code Exchange (RFC 7636, S256) and the random values of a sign-in. Pure."""

from __future__ import annotations

import base64
import hashlib
import secrets


def random_token(nbytes: int = 32) -> str:
    """URL-safe, unpadded, ``nbytes`` of entropy: state, nonce, cookie and CSRF values."""
    return secrets.token_urlsafe(nbytes)


def new_verifier() -> str:
    """43 to 128 characters of the unreserved set (RFC 7636 §4.1); 32 bytes give 43."""
    return secrets.token_urlsafe(32)


def challenge(verifier: str) -> str:
    """``BASE64URL(SHA256(verifier))`` without padding (RFC 7636 §4.2, method S256)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
