"""Access tokens: random secrets users type as their SSH password, stored only as scrypt hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_PREFIX = "sgt_"
_N, _R, _P = 2**14, 8, 1
# Stands in for the hashes of a login that has none, so it costs what one token costs.
_DUMMY_SALT = b"sshgate-no-token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_token(token: str, salt: bytes | None = None) -> str:
    """The ``scrypt$N$r$p$salt$hash`` form that goes into ``identities.*.tokens``."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(token.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def new_token() -> tuple[str, str]:
    """A fresh token and its hash; the token is shown once and never stored."""
    token = _PREFIX + _b64(secrets.token_bytes(30))
    return token, hash_token(token)


def verify_token(token: str, hashes: list[str], runs: int = 1) -> bool:
    """Check ``token`` against every stored hash, comparing digests in constant time.

    Every hash is computed even after a match so the time taken does not say which one matched,
    and scrypt runs at least ``runs`` times (the most tokens any identity has), so the time says
    neither whether the login has tokens nor how many (no user enumeration by timing: an
    identity with two tokens cost two runs, an unknown login one; README, "Security").
    """
    matched = False
    computed = 0
    for stored in hashes:
        parts = stored.split("$")
        if len(parts) != 6 or parts[0] != "scrypt":
            continue
        try:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            salt, want = _unb64(parts[4]), _unb64(parts[5])
            got = hashlib.scrypt(token.encode(), salt=salt, n=n, r=r, p=p, dklen=len(want), maxmem=2**27)
        except ValueError:
            continue
        computed += 1
        matched |= hmac.compare_digest(got, want)
    for _ in range(computed, max(runs, 1)):
        hashlib.scrypt(token.encode(), salt=_DUMMY_SALT, n=_N, r=_R, p=_P, dklen=32)
    return matched


def is_token_hash(text: str) -> bool:
    return text.startswith("scrypt$") and text.count("$") == 5
