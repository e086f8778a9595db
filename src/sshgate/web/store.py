"""The web app's server-side state: browser sessions behind an opaque cookie, sign-ins in
flight (state, nonce, PKCE verifier) and one-time sign-in links. They live in the gateway's
shared state (sshgate.state), under the SHA-256 of the cookie or token, so every worker or
replica knows them (docs/api.md, "Sign-in"); the value itself is only ever in the browser."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, TypedDict

from sshgate.state.base import SharedState
from sshgate.web.pkce import random_token
from sshgate.web.roles import Principal, Role

COOKIE = "sshgate_session"
SESSION_TTL_S = 8 * 3600.0
SIGN_IN_TTL_S = 600.0
ONE_TIME_TTL_S = 300.0
_ROLES: tuple[Role, ...] = ("admin", "viewer", "user")


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    verifier: str
    nonce: str
    next_path: str


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
    def __init__(self, shared: SharedState) -> None:
        self.shared = shared

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

    # Sign-ins in flight, keyed by their ``state``; each is used once (StateUnavailable when the
    # store that holds it does not answer).

    async def begin_sign_in(self, pending: PendingSignIn) -> str:
        state = random_token()
        doc = {"verifier": pending.verifier, "nonce": pending.nonce, "next": pending.next_path}
        await self.shared.put_record("signin", record_key(state), doc, time.time() + SIGN_IN_TTL_S, once=True)
        return state

    async def finish_sign_in(self, state: str) -> PendingSignIn | None:
        doc = await self.shared.take_record("signin", record_key(state))
        if doc is None:
            return None
        verifier, nonce, next_path = doc.get("verifier"), doc.get("nonce"), doc.get("next")
        if not isinstance(verifier, str) or not isinstance(nonce, str) or not isinstance(next_path, str):
            return None
        return PendingSignIn(verifier, nonce, next_path)

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
    return principal.csrf is not None and header is not None and hmac.compare_digest(principal.csrf, header)


class CookieOptions(TypedDict):
    httponly: bool
    samesite: str
    secure: bool
    path: str
    max_age: int


def cookie_options(secure: bool) -> CookieOptions:
    """HttpOnly and SameSite=Lax always, Secure under TLS (docs/api.md)."""
    return {"httponly": True, "samesite": "Lax", "secure": secure, "path": "/", "max_age": int(SESSION_TTL_S)}
