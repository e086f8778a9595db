"""The web app's server-side state: browser sessions behind an opaque cookie, sign-ins in
flight (state, nonce, PKCE verifier) and one-time sign-in links. In memory, bounded, expiring:
the app runs in one process (docs/api.md, "Sign-in")."""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypedDict, TypeVar

from sshgate.web.pkce import random_token
from sshgate.web.roles import Principal

COOKIE = "sshgate_session"
SESSION_TTL_S = 8 * 3600.0
SIGN_IN_TTL_S = 600.0
ONE_TIME_TTL_S = 300.0
# A flood of sign-in starts or cookies evicts the oldest, never exhausts memory.
MAX_ENTRIES = 10_000

V = TypeVar("V")


class _Expiring(Generic[V]):
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def put(self, key: str, value: V) -> None:
        self._items[key] = (time.monotonic() + self.ttl_s, value)
        while len(self._items) > MAX_ENTRIES:
            self._items.popitem(last=False)

    def get(self, key: str) -> V | None:
        found = self._items.get(key)
        if found is None:
            return None
        if found[0] < time.monotonic():
            del self._items[key]
            return None
        return found[1]

    def pop(self, key: str) -> V | None:
        value = self.get(key)
        self._items.pop(key, None)
        return value


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    verifier: str
    nonce: str
    next_path: str


class WebStore:
    def __init__(self) -> None:
        self._sessions: _Expiring[Principal] = _Expiring(SESSION_TTL_S)
        self._sign_ins: _Expiring[PendingSignIn] = _Expiring(SIGN_IN_TTL_S)
        self._links: _Expiring[Principal] = _Expiring(ONE_TIME_TTL_S)

    # Browser sessions: the cookie value is the key, the CSRF token lives beside the principal.

    def open_session(self, principal: Principal) -> str:
        cookie = random_token()
        self._sessions.put(
            cookie, Principal(principal.email, principal.groups, principal.role, random_token())
        )
        return cookie

    def session(self, cookie: str) -> Principal | None:
        return self._sessions.get(cookie)

    def close_session(self, cookie: str) -> None:
        self._sessions.pop(cookie)

    # Sign-ins in flight, keyed by their ``state``; each is used once.

    def begin_sign_in(self, pending: PendingSignIn) -> str:
        state = random_token()
        self._sign_ins.put(state, pending)
        return state

    def finish_sign_in(self, state: str) -> PendingSignIn | None:
        return self._sign_ins.pop(state)

    # One-time links (``sshgate demo`` without a provider): single use, short expiry.

    def one_time_link(self, principal: Principal) -> str:
        token = random_token()
        self._links.put(token, principal)
        return token

    def use_link(self, token: str) -> Principal | None:
        return self._links.pop(token)


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
