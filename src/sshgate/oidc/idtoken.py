"""ID-token validation and the person it names, free of I/O and of the clock.

PyJWT checks the signature, ``iss`` and ``aud``; the times are checked here against the ``now``
the caller passes, so tests can move the clock. Only the algorithms the issuer advertises and
:data:`~sshgate.oidc.metadata.STRONG_ALGORITHMS` allows are accepted (never ``none`` or HS*).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWK

from sshgate.oidc import errors
from sshgate.oidc.metadata import STRONG_ALGORITHMS

MAX_TOKEN_BYTES = 16384
LEEWAY_S = 60
# Times are checked below against the caller's clock, not PyJWT's.
_DECODE_OPTIONS: Any = {
    "require": ["iss", "sub", "aud", "exp", "iat"],
    "verify_exp": False,
    "verify_iat": False,
    "verify_nbf": False,
}


@dataclass(frozen=True, slots=True)
class TokenHeader:
    algorithm: str
    kid: str | None


@dataclass(frozen=True, slots=True)
class Person:
    """Who signed in, as far as the gateway cares."""

    subject: str
    email: str
    groups: tuple[str, ...]
    auth_time: int | None


def read_header(token: str, algorithms: Sequence[str]) -> TokenHeader:
    """The unverified header, refused unless its algorithm is one the gateway would verify."""
    if len(token) > MAX_TOKEN_BYTES:
        raise errors.invalid("ID token longer than 16 KiB")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise errors.invalid(f"ID token header: {exc}") from None
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in algorithms or algorithm not in STRONG_ALGORITHMS:
        raise errors.invalid(f"ID token algorithm {algorithm!r} is not one the issuer advertises")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise errors.invalid("ID token kid is not a string")
    return TokenHeader(algorithm, kid)


def verify_id_token(
    token: str, key: PyJWK, header: TokenHeader, *, issuer: str, client_id: str, now: float
) -> dict[str, Any]:
    """The claims of a token signed by ``key`` for ``client_id`` by ``issuer``, valid at ``now``."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[header.algorithm],
            audience=client_id,
            issuer=issuer,
            options=_DECODE_OPTIONS,
        )
    except jwt.PyJWTError as exc:
        raise errors.invalid(f"ID token rejected: {type(exc).__name__}: {exc}") from None
    exp, iat = _number(claims, "exp"), _number(claims, "iat")
    if exp + LEEWAY_S < now:
        raise errors.invalid(f"ID token expired {int(now - exp)} s ago")
    if iat - LEEWAY_S > now:
        raise errors.invalid("ID token issued in the future (iat)")
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise errors.invalid("ID token for several audiences without azp = client_id")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise errors.invalid("ID token sub is not a string")
    return claims


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise errors.invalid(f"ID token {name} is not a number")
    return float(value)


def person(
    claims: Mapping[str, Any], userinfo: Mapping[str, Any] | None, email_claim: str, groups_claim: str
) -> Person:
    """Email and groups from the ID token, or from userinfo where the token lacks them.

    Userinfo counts only when its ``sub`` is the token's (OpenID Connect Core §5.3.2). A false
    ``email_verified`` is refused wherever the email came from.
    """
    subject = str(claims["sub"])
    sources: list[Mapping[str, Any]] = [claims]
    if userinfo is not None:
        if userinfo.get("sub") != subject:
            raise errors.invalid("userinfo sub differs from the ID token's")
        sources.append(userinfo)
    email_source = next((s for s in sources if email_claim in s), None)
    if email_source is None:
        raise errors.refused(
            f"the provider did not say your email address (claim {email_claim!r})",
            f"no {email_claim!r} claim in the ID token or userinfo",
        )
    email = email_source[email_claim]
    if not isinstance(email, str) or email.count("@") != 1 or not all(0x21 <= ord(c) < 0x7F for c in email):
        raise errors.invalid(f"claim {email_claim!r} is not an email address")
    email = email.lower()
    if email_source.get("email_verified") is False or email_source.get("email_verified") == "false":
        raise errors.refused(f"the provider has not verified {email}", "email_verified is false")
    groups_source = next((s for s in sources if groups_claim in s), None)
    groups = _groups(groups_source[groups_claim]) if groups_source is not None else ()
    auth_time = claims.get("auth_time")
    if auth_time is not None and (isinstance(auth_time, bool) or not isinstance(auth_time, int | float)):
        raise errors.invalid("ID token auth_time is not a number")
    return Person(subject, email, groups, int(auth_time) if auth_time is not None else None)


def _groups(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        raise errors.invalid("the groups claim is not a list of strings")
    return tuple(dict.fromkeys(value))
