"""The provider's signing keys: fetched once, refetched for an unknown key id or when stale.

A token naming an unknown ``kid`` is what a key rotation looks like, so it triggers a refetch
once ``min_refresh_s`` has passed since the last one: forged tokens cannot make the gateway hammer
the provider, and no number of them can stop a real rotation being picked up (a memory of kids
already tried, capped, once could). A set older than ``max_age_s`` is refetched on its next use,
so a key the provider withdraws stops being trusted without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWKError

from sshgate.oidc import errors

MAX_AGE_S = 3600.0


def parse_jwks(doc: Any) -> dict[str, PyJWK]:
    """Usable signing keys by ``kid`` (a key without ``kid`` is kept under ``""``)."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise errors.invalid("the JWKS document has no 'keys' list")
    keys: dict[str, PyJWK] = {}
    for item in doc["keys"]:
        if not isinstance(item, Mapping) or item.get("use", "sig") != "sig":
            continue
        if "d" in item or "k" in item:
            continue  # a private or symmetric key has no business in a public key set
        try:
            key = PyJWK(dict(item))
        except (PyJWKError, ValueError, TypeError):
            continue
        keys.setdefault(str(item.get("kid", "")), key)
    return keys


class JwksCache:
    def __init__(
        self,
        fetch: Callable[[], Awaitable[Any]],
        on_fetch: Callable[[int], None] = lambda count: None,
        min_refresh_s: float = 5.0,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._on_fetch = on_fetch
        self._min_refresh_s = min_refresh_s
        self._max_age_s = max_age_s
        self._clock = clock
        self._keys: dict[str, PyJWK] | None = None
        self._last_fetch = float("-inf")
        self._lock = asyncio.Lock()
        self._generation = 0
        self.fetches = 0

    async def key(self, kid: str | None, algorithm: str) -> PyJWK:
        """The key that must have signed a token with this header, or :class:`SignInError`."""
        wanted = kid or ""
        if self._keys is None or self._clock() - self._last_fetch >= self._max_age_s:
            await self._refresh(self._generation)
        found = self._match(wanted, algorithm)
        if found is None and self._clock() - self._last_fetch >= self._min_refresh_s:
            await self._refresh(self._generation)
            found = self._match(wanted, algorithm)
        if found is None:
            raise errors.invalid(f"the ID token's signing key {wanted!r} ({algorithm}) is not in the JWKS")
        return found

    def _match(self, kid: str, algorithm: str) -> PyJWK | None:
        keys = self._keys or {}
        key = keys.get(kid)
        if key is None and not kid:
            usable = [k for k in keys.values() if _fits(k, algorithm)]
            key = usable[0] if len(usable) == 1 else None
        if key is None or not _fits(key, algorithm):
            return None
        return key

    async def _refresh(self, seen_generation: int) -> None:
        """One fetch at a time; sign-ins that waited for it use its answer instead of fetching again."""
        async with self._lock:
            if self._generation != seen_generation:
                return
            self._last_fetch = self._clock()
            keys = parse_jwks(await self._fetch())
            self.fetches += 1
            self._generation += 1
            self._keys = keys
            self._on_fetch(len(keys))


def _fits(key: PyJWK, algorithm: str) -> bool:
    """The key's own ``alg`` (when it names one) and its type must match the token's algorithm."""
    declared = key._jwk_data.get("alg")  # PyJWK keeps the JWK it was built from here
    if declared is not None and declared != algorithm:
        return False
    data = key._jwk_data
    if algorithm in _CURVES:
        return data.get("kty") == "EC" and data.get("crv") == _CURVES[algorithm]
    if algorithm == "EdDSA":
        return data.get("kty") == "OKP" and data.get("crv") in ("Ed25519", "Ed448")
    return data.get("kty") == "RSA"


_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
