"""The web app's server-side state: browser sessions behind an opaque cookie and one-time
sign-in links live in the gateway's shared state (sshgate.state), under the SHA-256 of the
cookie or token, so every worker or replica knows them (docs/api.md, "Sign-in"); the value
itself is only ever in the browser. A sign-in in flight (PKCE verifier, nonce, where to go
after, expiry) is sealed into its own ``state`` instead: starting one, which anybody may do
without signing in, stores nothing; only a sign-in the provider completed leaves a mark, so
that its ``state`` is refused a second time."""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

from sshgate.state.base import SharedState
from sshgate.state.seal import Sealer, same_secret
from sshgate.web.pkce import random_token
from sshgate.web.roles import Principal, Role

COOKIE = "sshgate_session"
SESSION_TTL_S = 8 * 3600.0
SIGN_IN_TTL_S = 600.0
# A sealed state is about 250 characters plus its ``next`` (at most MAX_NEXT_CHARS); anything
# much longer is not one of ours and is not decoded.
MAX_STATE_CHARS = 4096
_SIGN_IN_CONTEXT = "web:signin-state"
ONE_TIME_TTL_S = 300.0
_ROLES: tuple[Role, ...] = ("admin", "viewer", "user")


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    verifier: str
    nonce: str
    next_path: str
    browser: str  # record_key of the secret in the browser's sign-in cookie (same_browser)


def record_key(value: str) -> str:
    """What the store knows of a cookie or token: its hash, useless to present."""
    return hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()


def _person(principal: Principal, csrf: str | None) -> dict[str, Any]:
    return {"email": principal.email, "groups": list(principal.groups), "role": principal.role, "csrf": csrf}


def _principal(doc: dict[str, Any] | None) -> Principal | None:
    """The record's person, or None when it does not have the shape this module writes."""
    if doc is None:
        return None
    email, groups, role, csrf = doc.get("email"), doc.get("groups"), doc.get("role"), doc.get("csrf")
    if not isinstance(email, str) or not isinstance(groups, list) or role not in _ROLES:
        return None
    if csrf is not None and not isinstance(csrf, str):
        return None
    return Principal(email, tuple(str(g) for g in groups), role, csrf)


class WebStore:
    """``sealer`` seals sign-ins in flight: under ``state.hmac_key`` with replicas, so any of them
    opens what another sealed (state/build.py, ``web_sealer``)."""

    def __init__(self, shared: SharedState, sealer: Sealer, clock: Callable[[], float] = time.time) -> None:
        self.shared = shared
        self.sealer = sealer
        self._clock = clock

    # Browser sessions: the CSRF token lives beside the principal.

    async def open_session(self, principal: Principal) -> str:
        cookie = random_token()
        doc = _person(principal, random_token())
        await self.shared.put_record("session", record_key(cookie), doc, time.time() + SESSION_TTL_S)
        return cookie

    async def session(self, cookie: str) -> Principal | None:
        return _principal(await self.shared.get_record("session", record_key(cookie)))

    async def close_session(self, cookie: str) -> None:
        await self.shared.drop_record("session", record_key(cookie))

    # Sign-ins in flight: the ``state`` is the sign-in itself, encrypted and authenticated
    # (AES-GCM); nobody without the key reads its verifier or makes one up. Used once: a mark
    # under its hash when it completes (StateUnavailable when the store does not answer).

    def begin_sign_in(self, pending: PendingSignIn) -> str:
        doc = {"v": pending.verifier, "n": pending.nonce, "x": pending.next_path, "b": pending.browser,
               "e": self._clock() + SIGN_IN_TTL_S}  # fmt: skip
        sealed = self.sealer.seal_private(_SIGN_IN_CONTEXT, doc)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open_sign_in(self, state: str) -> tuple[PendingSignIn, float] | None:
        """The sign-in and when it expires, or None for a state we did not seal or that expired."""
        if len(state) > MAX_STATE_CHARS:
            return None
        try:
            sealed = base64.urlsafe_b64decode(state + "=" * (-len(state) % 4))
        except (binascii.Error, ValueError):
            return None
        doc = self.sealer.open_private(_SIGN_IN_CONTEXT, sealed) or {}
        fields = [value for value in (doc.get(key) for key in "vnxb") if isinstance(value, str)]
        expires_at = doc.get("e")
        if len(fields) != 4:
            return None
        if not isinstance(expires_at, (int, float)) or expires_at <= self._clock():
            return None
        return PendingSignIn(*fields), float(expires_at)

    async def sign_in_used(self, state: str) -> bool:
        return await self.shared.get_record("signin", record_key(state)) is not None

    async def use_sign_in(self, state: str, expires_at: float) -> bool:
        """Mark the state used until it expires anyway; True for the one caller that did."""
        return await self.shared.claim_record("signin", record_key(state), expires_at)

    # One-time links (``sshgate demo`` without a provider): single use, short expiry.

    async def one_time_link(self, principal: Principal) -> str:
        token = random_token()
        doc = _person(principal, None)
        await self.shared.put_record("link", record_key(token), doc, time.time() + ONE_TIME_TTL_S, once=True)
        return token

    async def use_link(self, token: str) -> Principal | None:
        return _principal(await self.shared.take_record("link", record_key(token)))


def csrf_ok(principal: Principal, header: str | None) -> bool:
    """A cookie-authenticated change carries the session's token (compared in constant time)."""
    return principal.csrf is not None and header is not None and same_secret(principal.csrf, header)


def same_browser(pending: PendingSignIn, cookie: str) -> bool:
    """The callback comes from the browser that started the sign-in: its cookie holds the secret
    whose hash the state carries. The secret never appears in a URL, so a leaked callback URL
    (code and state) signs nobody in elsewhere (docs/api.md, "Sign-in")."""
    return same_secret(pending.browser, record_key(cookie))


class CookieOptions(TypedDict):
    httponly: bool
    samesite: str
    secure: bool
    path: str
    max_age: int


def cookie_options(secure: bool) -> CookieOptions:
    """HttpOnly and SameSite=Lax always, Secure over HTTPS (docs/api.md)."""
    return {"httponly": True, "samesite": "Lax", "secure": secure, "path": "/", "max_age": int(SESSION_TTL_S)}
