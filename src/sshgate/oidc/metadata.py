"""The provider's discovery document, read and checked without I/O (OpenID Connect Discovery 1.0)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sshgate.config import issuer_allowed

# Asymmetric algorithms only: an HS256 ID token is signed with the client secret, which the
# gateway holds too, so it would prove nothing about the provider; "none" proves nothing at all.
STRONG_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")

ClientAuth = Literal["client_secret_basic", "client_secret_post", "none"]


class MetadataError(ValueError):
    """A discovery document the gateway cannot trust or use; the message names the field."""


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    jwks_uri: str
    token_endpoint: str
    device_authorization_endpoint: str
    userinfo_endpoint: str | None
    algorithms: tuple[str, ...]
    auth_methods: tuple[str, ...]
    authorization_endpoint: str | None = None  # the web app's sign-in (code flow)

    def client_auth(self, has_secret: bool) -> ClientAuth:
        """client_secret_basic, or client_secret_post when the provider offers only that."""
        if not has_secret:
            return "none"
        if "client_secret_basic" in self.auth_methods:
            return "client_secret_basic"
        if "client_secret_post" in self.auth_methods:
            return "client_secret_post"
        raise MetadataError(
            "token_endpoint_auth_methods_supported offers neither client_secret_basic nor client_secret_post"
        )


def _url(doc: Mapping[str, Any], name: str, required: bool = True) -> str | None:
    value = doc.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not issuer_allowed(value.split("?", 1)[0]):
        raise MetadataError(f"{name} is missing or not an https:// URL")
    return value


def _strings(doc: Mapping[str, Any], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = doc.get(name)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MetadataError(f"{name} is not a list of strings")
    return tuple(value)


def parse_metadata(doc: Any, issuer: str) -> ProviderMetadata:
    """Check the document belongs to ``issuer`` and keep what the sign-in needs."""
    if not isinstance(doc, Mapping):
        raise MetadataError("the discovery document is not a JSON object")
    found = doc.get("issuer")
    if not isinstance(found, str) or found.rstrip("/") != issuer.rstrip("/"):
        raise MetadataError(f"issuer {found!r} is not the configured {issuer!r}")
    advertised = _strings(doc, "id_token_signing_alg_values_supported", ())
    algorithms = tuple(a for a in advertised if a in STRONG_ALGORITHMS)
    if not algorithms:
        raise MetadataError(
            f"id_token_signing_alg_values_supported {list(advertised)} has no asymmetric algorithm"
        )
    device = _url(doc, "device_authorization_endpoint", required=False)
    if device is None:
        raise MetadataError("the provider has no device_authorization_endpoint (enable the device flow)")
    return ProviderMetadata(
        issuer=found,
        jwks_uri=str(_url(doc, "jwks_uri")),
        token_endpoint=str(_url(doc, "token_endpoint")),
        device_authorization_endpoint=device,
        userinfo_endpoint=_url(doc, "userinfo_endpoint", required=False),
        algorithms=algorithms,
        auth_methods=_strings(doc, "token_endpoint_auth_methods_supported", ("client_secret_basic",)),
        authorization_endpoint=_url(doc, "authorization_endpoint", required=False),
    )
