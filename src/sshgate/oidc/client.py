"""The gateway as an OAuth client of one OpenID provider: discovery, keys, device grant, userinfo."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

from sshgate.config import OidcConfig
from sshgate.native_secret import SecretError, read_indirect
from sshgate.oidc import errors
from sshgate.oidc.device import (
    DEVICE_GRANT,
    DeviceAuthorization,
    DevicePoll,
    Tokens,
    parse_device_authorization,
    parse_tokens,
)
from sshgate.oidc.http import ProviderHttp, ProviderUnreachable
from sshgate.oidc.idtoken import Person, person, read_header, verify_id_token
from sshgate.oidc.jwks import JwksCache
from sshgate.oidc.metadata import MetadataError, ProviderMetadata, parse_metadata

DISCOVERY_TTL_S = 3600.0


class OidcClient:
    """Shared by every connection of a gateway process: one discovery document, one key set."""

    def __init__(
        self,
        config: OidcConfig,
        on_jwks_fetch: Callable[[int], None] = lambda count: None,
        http: ProviderHttp | None = None,
    ) -> None:
        self.config = config
        self.http = http or ProviderHttp()
        self.jwks = JwksCache(self._fetch_jwks, on_jwks_fetch)
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = 0.0

    async def metadata(self) -> ProviderMetadata:
        if self._metadata is None or time.monotonic() - self._metadata_at > DISCOVERY_TTL_S:
            url = f"{self.config.issuer}/.well-known/openid-configuration"
            try:
                self._metadata = parse_metadata(await self.http.get_json(url), self.config.issuer)
            except ProviderUnreachable as exc:
                raise errors.unavailable(str(exc)) from None
            except MetadataError as exc:
                raise errors.unavailable(f"discovery document: {exc}") from None
            self._metadata_at = time.monotonic()
        return self._metadata

    async def _fetch_jwks(self) -> Any:
        metadata = await self.metadata()
        try:
            return await self.http.get_json(metadata.jwks_uri)
        except ProviderUnreachable as exc:
            raise errors.unavailable(str(exc)) from None

    def _secret(self) -> str | None:
        if self.config.client_secret is None:
            return None
        try:
            return read_indirect(self.config.client_secret)[0].strip()
        except SecretError as exc:
            raise errors.unavailable(f"oidc.client_secret: {exc}") from None

    async def _post(self, url: str, form: dict[str, str]) -> tuple[int, Any]:
        """POST with the client's authentication (RFC 6749 §2.3.1)."""
        metadata = await self.metadata()
        secret = self._secret()
        try:
            method = metadata.client_auth(secret is not None)
        except MetadataError as exc:
            raise errors.unavailable(str(exc)) from None
        form = {**form, "client_id": self.config.client_id}
        headers = {}
        if method == "client_secret_basic" and secret is not None:
            pair = f"{_form_encode(self.config.client_id)}:{_form_encode(secret)}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        elif method == "client_secret_post" and secret is not None:
            form["client_secret"] = secret
        try:
            return await self.http.post_form(url, form, headers)
        except ProviderUnreachable as exc:
            raise errors.unavailable(str(exc)) from None

    async def start(self, extra: dict[str, str] | None = None) -> DeviceAuthorization:
        """Ask for a user code (RFC 8628 §3.1); ``extra`` carries the step-up's max_age, prompt, acr."""
        metadata = await self.metadata()
        form = {"scope": " ".join(self.config.scopes), **(extra or {})}
        _, doc = await self._post(metadata.device_authorization_endpoint, form)
        return parse_device_authorization(doc)

    async def wait_for_tokens(self, authorization: DeviceAuthorization) -> Tokens:
        """Poll the token endpoint until the person approves, denies, or the code runs out."""
        metadata = await self.metadata()
        poll = DevicePoll(authorization, time.monotonic(), self.config.sign_in_timeout_s)
        form = {"grant_type": DEVICE_GRANT, "device_code": authorization.device_code}
        while True:
            await asyncio.sleep(poll.wait(time.monotonic()))
            status, doc = await self._post(metadata.token_endpoint, form)
            tokens = poll.answer(status, doc, time.monotonic())
            if tokens is not None:
                return tokens

    async def exchange_code(self, code: str, redirect_uri: str, verifier: str) -> Tokens:
        """The authorization-code grant with its PKCE verifier (RFC 7636 §4.5), for the web app."""
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        status, doc = await self._post(metadata.token_endpoint, form)
        return parse_tokens(status, doc)

    async def claims(self, id_token: str) -> dict[str, Any]:
        """An ID token's claims once signature, issuer, audience and times hold (docs/oidc.md)."""
        metadata = await self.metadata()
        header = read_header(id_token, metadata.algorithms)
        key = await self.jwks.key(header.kid, header.algorithm)
        return verify_id_token(
            id_token, key, header, issuer=metadata.issuer, client_id=self.config.client_id, now=time.time()
        )

    async def person(self, tokens: Tokens, claims: dict[str, Any] | None = None) -> Person:
        """Validate the ID token (unless ``claims`` are its validated claims), then read email
        and groups (from userinfo when it lacks them)."""
        metadata = await self.metadata()
        if claims is None:
            claims = await self.claims(tokens.id_token)
        userinfo = None
        wanted = (self.config.email_claim, self.config.groups_claim)
        if any(name not in claims for name in wanted) and metadata.userinfo_endpoint and tokens.access_token:
            try:
                userinfo = await self.http.get_json(metadata.userinfo_endpoint, bearer=tokens.access_token)
            except ProviderUnreachable as exc:
                raise errors.unavailable(f"userinfo: {exc}") from None
            if not isinstance(userinfo, dict):
                raise errors.invalid("userinfo answer is not a JSON object")
        return person(claims, userinfo, self.config.email_claim, self.config.groups_claim)

    async def aclose(self) -> None:
        await self.http.aclose()


def _form_encode(value: str) -> str:
    """RFC 6749 §2.3.1: client id and secret are form-encoded before they go into Basic auth."""
    return quote_plus(value)
