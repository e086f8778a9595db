"""Single sign-on as the gateway process holds it: the provider client, key bindings, step-ups.

One :class:`Sso` per process and configuration; connections ask it whether a login may sign in,
whether a key is bound to the login's person, and start device flows through it
(docs/oidc.md). Bindings and step-up times live in the shared state (``data_dir`` or the store,
sshgate.state), so every worker and replica sees the same.
"""

from __future__ import annotations

import time

from sshgate import audit
from sshgate.config import OidcConfig
from sshgate.login import Login
from sshgate.oidc.bindings import KeyBinding
from sshgate.oidc.client import OidcClient
from sshgate.oidc.signin import SignedIn, SignIn
from sshgate.state.base import SharedState


class Sso:
    def __init__(self, config: OidcConfig, store: SharedState) -> None:
        self.config = config
        self.log = audit.logger()
        self.client = OidcClient(config, on_jwks_fetch=self._jwks_fetched)
        self.store = store

    def _jwks_fetched(self, keys: int) -> None:
        self.log.info(
            "oidc.jwks_fetched", issuer=self.config.issuer, keys=keys, fetches=self.client.jwks.fetches
        )

    def may_sign_in(self, login: Login) -> bool:
        """A human login naming this provider, with an email in ``allowed_domains`` (if set)."""
        if login.kind != "human" or login.provider != self.config.name:
            return False
        domains = self.config.allowed_domains
        return not domains or login.subject.rsplit("@", 1)[1] in domains

    async def bound(self, fingerprint: str, login: Login) -> KeyBinding | None:
        """The live binding of this key to the login's person (a file stat, or one bounded call)."""
        binding = await self.store.binding(fingerprint)
        if binding is None or binding.provider != self.config.name or binding.email != login.subject:
            return None
        return binding

    def sign_in(self, email: str, step_up: bool = False) -> SignIn:
        return SignIn(self.client, email, step_up)

    async def bind(self, fingerprint: str, person: SignedIn) -> KeyBinding:
        binding = KeyBinding(
            fingerprint,
            person.provider,
            person.email,
            person.groups,
            person.signed_in_at,
            person.signed_in_at + self.config.key_ttl_s,
        )
        await self.store.bind(binding)
        return binding

    async def fresh_step_up(self, provider: str, email: str) -> float | None:
        """When this identity last stepped up, if that still serves (within ``mfa.max_age_s``)."""
        at = await self.store.step_up_at(provider, email)
        if at is None or time.time() - at > self.config.mfa.max_age_s:
            return None
        return at

    async def record_step_up(self, provider: str, email: str, at: float) -> None:
        await self.store.record_step_up(provider, email, at)

    async def aclose(self) -> None:
        await self.client.aclose()
