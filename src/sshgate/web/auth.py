"""Who is asking: the browser's session cookie or ``Authorization: Bearer <ID token>`` (docs/api.md).

An ID token counts as it does for SSH sign-in (docs/oidc.md): signature against the issuer's
keys, ``iss``, ``aud`` = ``client_id``, times, verified email, ``allowed_domains``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from sshgate.config import Web
from sshgate.oidc import errors
from sshgate.oidc.client import OidcClient
from sshgate.oidc.device import Tokens
from sshgate.oidc.errors import SignInError
from sshgate.oidc.signin import admit
from sshgate.web.roles import Principal, role_of
from sshgate.web.store import COOKIE, WebStore


class Authenticator:
    def __init__(self, config: Web, store: WebStore, oidc: Callable[[], OidcClient | None]) -> None:
        self.config = config
        self.store = store
        self.oidc = oidc

    def principal_for(self, email: str, groups: tuple[str, ...]) -> Principal:
        return Principal(email, groups, role_of(groups, self.config.viewer_groups, self.config.admin_groups))

    async def person_from_tokens(self, client: OidcClient, tokens: Tokens, nonce: str | None) -> Principal:
        """A validated ID token's person (userinfo fills in with the access token, when given);
        ``nonce``, when given, must be the token's (code flow)."""
        claims = await client.claims(tokens.id_token)
        if nonce is not None and claims.get("nonce") != nonce:
            raise errors.invalid("ID token nonce is not the one this sign-in sent")
        person = await client.person(tokens, claims)
        admit(person, person.email, client.config.allowed_domains, time.time())
        return self.principal_for(person.email, person.groups)

    async def authenticate(self, request: web.Request) -> Principal | None:
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            client = self.oidc()
            if scheme.lower() != "bearer" or not token.strip() or client is None:
                return None
            try:
                return await self.person_from_tokens(client, Tokens(token.strip(), None), None)
            except SignInError:
                return None
        cookie = request.cookies.get(COOKIE)
        return self.store.session(cookie) if cookie else None
