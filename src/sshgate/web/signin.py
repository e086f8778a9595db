"""Browser sign-in with the OpenID provider: authorization code with PKCE S256, ``state`` and
``nonce`` checked (docs/api.md, "Sign-in"); and the one-time links of ``sshgate demo``."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from sshgate import audit
from sshgate.oidc.errors import SignInError
from sshgate.state.base import StateUnavailable
from sshgate.web.auth import Authenticator
from sshgate.web.pkce import challenge, new_verifier, random_token
from sshgate.web.roles import Principal
from sshgate.web.store import (
    COOKIE,
    SIGN_IN_TTL_S,
    PendingSignIn,
    cookie_options,
    csrf_ok,
    record_key,
    same_browser,
)

CALLBACK = "/signin/callback"
# A secret whose hash the sign-in's state carries sits in this cookie, so a callback only completes
# in the browser that started it: nobody signs a victim in to the attacker's account with a crafted
# link, nor completes a victim's sign-in with a callback URL read from a log (store.same_browser).
STATE_COOKIE = "sshgate_signin"
# Where to go after sign-in travels inside the sealed state (and so in a cookie and a URL).
MAX_NEXT_CHARS = 1024


def safe_next(value: str | None) -> str:
    """Only a path on this site (never ``//host`` or a URL): no open redirect after sign-in.
    Printable ASCII only: browsers drop tabs and newlines from a ``Location``, so ``/<TAB>/evil.com``
    would become ``//evil.com``, and CR/LF would split the header."""
    if (
        not value
        or len(value) > MAX_NEXT_CHARS
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or not all(" " < ch < "\x7f" for ch in value)
    ):
        return "/"
    return value


class SignInRoutes:
    def __init__(self, auth: Authenticator, public_url: str, secure: bool) -> None:
        self.auth = auth
        self.public_url = public_url
        self.secure = secure
        self.log = audit.logger()

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/signin", self.begin)
        app.router.add_get(CALLBACK, self.callback)
        app.router.add_get("/signin/once", self.once)
        app.router.add_post("/signout", self.sign_out)

    async def _signed_in(self, principal: Principal, next_path: str) -> web.Response:
        response = web.Response(status=302, headers={"Location": next_path})
        cookie = await self.auth.store.open_session(principal)
        response.set_cookie(COOKIE, cookie, **cookie_options(self.secure))
        self.log.info("web.sign_in", email=principal.email, role=principal.role)
        return response

    async def begin(self, request: web.Request) -> web.StreamResponse:
        client = self.auth.oidc()
        if client is None:
            raise web.HTTPServiceUnavailable(text="sign-in needs identities.oidc in the configuration\n")
        try:
            metadata = await client.metadata()
        except SignInError as exc:  # the detail (provider URL, network error) is for the log only
            self.log.warning("web.sign_in", result="unavailable", reason=exc.reason)
            raise web.HTTPServiceUnavailable(
                text="the identity provider is unavailable; try again later\n"
            ) from None
        if metadata.authorization_endpoint is None:
            raise web.HTTPServiceUnavailable(text="the identity provider has no authorization_endpoint\n")
        verifier, nonce, secret = new_verifier(), random_token(), random_token()
        state = self.auth.store.begin_sign_in(
            PendingSignIn(verifier, nonce, safe_next(request.query.get("next")), record_key(secret))
        )
        query = {
            "response_type": "code",
            "client_id": client.config.client_id,
            "redirect_uri": self.public_url + CALLBACK,
            "scope": " ".join(client.config.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge(verifier),
            "code_challenge_method": "S256",
        }
        response = web.Response(
            status=302, headers={"Location": f"{metadata.authorization_endpoint}?{urlencode(query)}"}
        )
        options = cookie_options(self.secure)
        response.set_cookie(STATE_COOKIE, secret, httponly=True, samesite="Lax", secure=options["secure"],
                            path=CALLBACK, max_age=int(SIGN_IN_TTL_S))  # fmt: skip
        return response

    async def callback(self, request: web.Request) -> web.StreamResponse:
        state, cookie = request.query.get("state", ""), request.cookies.get(STATE_COOKIE)
        if not state or not cookie:
            raise _other_browser()
        store = self.auth.store
        opened = store.open_sign_in(state)
        if opened is None or await store.sign_in_used(state):
            raise _unknown_state()
        pending, expires_at = opened
        if not same_browser(pending, cookie):
            self.log.warning("web.sign_in", result="refused", reason="callback from another browser")
            raise _other_browser()
        client = self.auth.oidc()
        code = request.query.get("code")
        if client is None or not code:
            error = request.query.get("error", "no code")
            self.log.warning("web.sign_in", result="refused", reason=f"provider answered {error[:100]}")
            raise web.HTTPForbidden(text="sign-in failed at the identity provider\n")
        try:
            tokens = await client.exchange_code(code, self.public_url + CALLBACK, pending.verifier)
            principal = await self.auth.person_from_tokens(client, tokens, pending.nonce)
        except SignInError as exc:
            self.log.warning("web.sign_in", result="refused", reason=exc.reason)
            raise web.HTTPForbidden(text=f"sign-in failed: {exc}\n") from None
        # Marked used only now, for a sign-in the provider completed: marks are as many as real
        # sign-ins. Of two callbacks with one state (a replay racing the original), one gets here.
        try:
            first = await store.use_sign_in(state, expires_at)
        except StateUnavailable:
            raise _store_away() from None
        if not first:
            self.log.warning("web.sign_in", result="refused", reason="sign-in state used twice")
            raise _unknown_state()
        response = await self._signed_in(principal, pending.next_path)
        response.del_cookie(STATE_COOKIE, path=CALLBACK)
        return response

    async def once(self, request: web.Request) -> web.StreamResponse:
        try:
            principal = await self.auth.store.use_link(request.query.get("token", ""))
        except StateUnavailable:
            raise _store_away() from None
        if principal is None:
            raise web.HTTPForbidden(text="this sign-in link was used already or has expired\n")
        return await self._signed_in(principal, "/")

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        cookie = request.cookies.get(COOKIE)
        principal = await self.auth.store.session(cookie) if cookie else None
        if principal is None or not csrf_ok(principal, request.headers.get("X-CSRF-Token")):
            raise web.HTTPForbidden(text="sign-out needs the page's CSRF token\n")
        await self.auth.store.close_session(cookie or "")
        response = web.Response(status=204)
        response.del_cookie(COOKIE, path="/")
        return response


def _other_browser() -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text="sign-in failed: it was not started in this browser; start again at /signin\n"
    )


def _unknown_state() -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text="sign-in failed: unknown, used or expired state; start again at /signin\n")


def _store_away() -> web.HTTPServiceUnavailable:
    """A single-use record may be in the shared store only: never accepted from anywhere else."""
    return web.HTTPServiceUnavailable(
        text="sign-in failed: the state store is unavailable; try again in a moment\n"
    )
