"""ID tokens, key sets and discovery documents, checked without a network: real signatures made
with real keys, and every way a token can be wrong."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from sshgate.oidc.errors import SignInError
from sshgate.oidc.idtoken import person, read_header, verify_id_token
from sshgate.oidc.jwks import JwksCache, parse_jwks
from sshgate.oidc.metadata import MetadataError, parse_metadata

ISSUER = "https://idp.example.com"
CLIENT = "sshgate"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: Any, kid: str, **extra: str) -> dict[str, Any]:
    algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
    doc: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**doc, "kid": kid, "use": "sig", **extra}


def sign(claims: dict[str, Any], key: Any = RSA_KEY, alg: str = "RS256", kid: str = "k1") -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "sub": "u-1", "aud": CLIENT, "iat": now, "exp": now + 300, **claims}
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers={"kid": kid}
    )


def keyset(*jwks: dict[str, Any]) -> JwksCache:
    async def fetch() -> Any:
        return {"keys": list(jwks)}

    return JwksCache(fetch, min_refresh_s=0)


async def verify(token: str, cache: JwksCache | None = None, now: float | None = None) -> dict[str, Any]:
    cache = cache or keyset(public_jwk(RSA_KEY, "k1"), public_jwk(EC_KEY, "e1"))
    header = read_header(token, ["RS256", "ES256"])
    key = await cache.key(header.kid, header.algorithm)
    return verify_id_token(token, key, header, issuer=ISSUER, client_id=CLIENT, now=now or time.time())


async def test_a_good_token_yields_its_claims() -> None:
    assert (await verify(sign({"email": "a@corp.com"})))["email"] == "a@corp.com"
    assert (await verify(sign({}, key=EC_KEY, alg="ES256", kid="e1")))["sub"] == "u-1"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "someone-else"}, "InvalidAudience"),
        ({"iss": "https://evil.example.com"}, "InvalidIssuer"),
        ({"exp": -120}, "expired"),
        ({"iat": 600, "exp": 900}, "future"),
        ({"aud": [CLIENT, "other"]}, "azp"),
        ({"exp": None}, "MissingRequiredClaim"),
    ],
)
async def test_wrong_claims_are_refused(claims: dict[str, Any], reason: str) -> None:
    # Times are offsets from when the test runs (collection can be minutes earlier in a long suite).
    now = int(time.time())
    claims = {k: now + v if k in ("iat", "exp") and isinstance(v, int) else v for k, v in claims.items()}
    with pytest.raises(SignInError) as caught:
        await verify(sign(claims))
    assert caught.value.outcome == "invalid" and reason in caught.value.reason
    assert "could not be verified" in str(caught.value)


async def test_several_audiences_need_azp() -> None:
    assert (await verify(sign({"aud": [CLIENT, "other"], "azp": CLIENT})))["azp"] == CLIENT


async def test_weak_or_unadvertised_algorithms_are_refused_before_any_key_is_used() -> None:
    unsigned = jwt.encode({"iss": ISSUER, "sub": "x", "aud": CLIENT}, None, algorithm="none")
    hmac = jwt.encode({"iss": ISSUER}, "client-secret-as-key-0123456789abcdef", algorithm="HS256")
    for token, advertised in ((unsigned, ["RS256", "none"]), (hmac, ["RS256", "HS256"])):
        with pytest.raises(SignInError, match="could not be verified"):
            read_header(token, advertised)
    with pytest.raises(SignInError) as caught:
        read_header(sign({}, key=EC_KEY, alg="ES256", kid="e1"), ["RS256"])
    assert "not one the issuer advertises" in caught.value.reason


async def test_a_signature_by_another_key_is_refused() -> None:
    forged = sign({}, key=OTHER_KEY, kid="k1")  # the provider's kid, someone else's key
    with pytest.raises(SignInError) as caught:
        await verify(forged)
    assert "InvalidSignature" in caught.value.reason


async def test_a_key_of_another_type_or_declared_algorithm_is_not_used() -> None:
    cache = keyset(public_jwk(EC_KEY, "k1"))  # the token says RS256 but k1 is an EC key
    with pytest.raises(SignInError, match="could not be verified"):
        await verify(sign({}), cache)
    cache = keyset(public_jwk(RSA_KEY, "k1", alg="PS256"))
    with pytest.raises(SignInError, match="could not be verified"):
        await verify(sign({}), cache)


async def test_unknown_kids_refetch_at_most_once_per_gap_and_never_block_a_rotation() -> None:
    served = [public_jwk(RSA_KEY, "k1")]
    fetched: list[int] = []
    now = [1000.0]

    async def fetch() -> Any:
        return {"keys": list(served)}

    cache = JwksCache(fetch, on_fetch=fetched.append, min_refresh_s=5, clock=lambda: now[0])
    await verify(sign({}), cache)
    await verify(sign({}), cache)
    assert cache.fetches == 1  # the first sign-in fetched; the second used the cache
    now[0] += 10
    for n in range(300):  # forged tokens, each naming a kid never seen: one refetch in all
        with pytest.raises(SignInError, match="could not be verified"):
            await verify(sign({}, key=OTHER_KEY, kid=f"junk-{n}"), cache)
    assert cache.fetches == 2
    served.append(public_jwk(OTHER_KEY, "k2"))  # the provider rotates
    rotated = sign({}, key=OTHER_KEY, kid="k2")
    with pytest.raises(SignInError):  # within the gap the cache does not ask again...
        await verify(rotated, cache)
    now[0] += 5
    assert (await verify(rotated, cache))["sub"] == "u-1"  # ...after it, the new key is found
    assert cache.fetches == 3 and fetched == [1, 1, 2]


async def test_a_key_set_older_than_its_max_age_is_refetched_on_use() -> None:
    served = [public_jwk(RSA_KEY, "k1")]
    now = [0.0]

    async def fetch() -> Any:
        return {"keys": list(served)}

    cache = JwksCache(fetch, clock=lambda: now[0])
    await verify(sign({}), cache)
    served.clear()  # the provider withdraws the key
    served.append(public_jwk(OTHER_KEY, "k2"))
    now[0] += 3599
    await verify(sign({}), cache)  # still within the max age: cached
    now[0] += 2
    with pytest.raises(SignInError, match="could not be verified"):
        await verify(sign({}), cache)
    assert cache.fetches == 2


async def test_concurrent_sign_ins_share_one_fetch() -> None:
    calls = 0

    async def fetch() -> Any:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return {"keys": [public_jwk(RSA_KEY, "k1")]}

    cache = JwksCache(fetch, min_refresh_s=0)
    await asyncio.gather(*(verify(sign({}), cache) for _ in range(5)))
    assert calls == 1


def test_private_and_symmetric_keys_are_not_trusted() -> None:
    private = json.loads(RSAAlgorithm.to_jwk(RSA_KEY))
    keys = parse_jwks(
        {
            "keys": [
                {**private, "kid": "p"},
                {"kty": "oct", "k": "c2VjcmV0", "kid": "s"},
                public_jwk(EC_KEY, "e"),
            ]
        }
    )
    assert set(keys) == {"e"}


def test_person_prefers_the_token_and_falls_back_to_userinfo() -> None:
    claims = {"sub": "u-1", "auth_time": 1700000000}
    found = person(claims, {"sub": "u-1", "email": "Bob@Corp.com", "groups": "eng"}, "email", "groups")
    assert (found.email, found.groups, found.auth_time) == ("bob@corp.com", ("eng",), 1700000000)
    found = person({**claims, "email": "a@corp.com", "groups": ["x", "x", "y"]}, None, "email", "groups")
    assert (found.email, found.groups) == ("a@corp.com", ("x", "y"))
    assert person({**claims, "upn": "c@corp.com"}, None, "upn", "roles").groups == ()


@pytest.mark.parametrize(
    ("claims", "userinfo", "outcome", "text"),
    [
        ({"email": "a@corp.com", "email_verified": False}, None, "refused", "not verified a@corp.com"),
        ({}, {"sub": "u-1", "email": "a@corp.com", "email_verified": "false"}, "refused", "not verified"),
        ({}, {"sub": "someone-else", "email": "a@corp.com"}, "invalid", "could not be verified"),
        ({}, None, "refused", "did not say your email"),
        ({"email": "a@corp.com\x1b[2J"}, None, "invalid", "could not be verified"),
        ({"email": "a@corp.com", "groups": [1, 2]}, None, "invalid", "could not be verified"),
    ],
)
def test_person_refusals(
    claims: dict[str, Any], userinfo: dict[str, Any] | None, outcome: str, text: str
) -> None:
    with pytest.raises(SignInError) as caught:
        person({"sub": "u-1", **claims}, userinfo, "email", "groups")
    assert caught.value.outcome == outcome and text in str(caught.value)


DISCOVERY = {
    "issuer": ISSUER,
    "jwks_uri": f"{ISSUER}/jwks",
    "token_endpoint": f"{ISSUER}/token",
    "device_authorization_endpoint": f"{ISSUER}/device/auth",
    "userinfo_endpoint": f"{ISSUER}/me",
    "id_token_signing_alg_values_supported": ["HS256", "RS256", "none", "ES256"],
}


def test_discovery_keeps_only_asymmetric_algorithms_and_picks_client_auth() -> None:
    meta = parse_metadata(DISCOVERY, ISSUER + "/")
    assert meta.algorithms == ("RS256", "ES256")
    assert meta.client_auth(True) == "client_secret_basic"  # the spec's default when unlisted
    post_only = parse_metadata(
        {**DISCOVERY, "token_endpoint_auth_methods_supported": ["client_secret_post"]}, ISSUER
    )
    assert post_only.client_auth(True) == "client_secret_post"
    assert post_only.client_auth(False) == "none"
    both = {
        **DISCOVERY,
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
    }
    assert parse_metadata(both, ISSUER).client_auth(True) == "client_secret_basic"
    jwt_only = parse_metadata(
        {**DISCOVERY, "token_endpoint_auth_methods_supported": ["private_key_jwt"]}, ISSUER
    )
    with pytest.raises(MetadataError):
        jwt_only.client_auth(True)


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"issuer": "https://evil.example.com"}, "not the configured"),
        ({"id_token_signing_alg_values_supported": ["HS256", "none"]}, "no asymmetric"),
        ({"device_authorization_endpoint": None}, "device_authorization_endpoint"),
        ({"token_endpoint": "http://idp.example.com/token"}, "token_endpoint"),
        ({"jwks_uri": "javascript:alert(1)"}, "jwks_uri"),
    ],
)
def test_discovery_refusals(change: dict[str, Any], text: str) -> None:
    doc = {k: v for k, v in {**DISCOVERY, **change}.items() if v is not None}
    with pytest.raises(MetadataError, match=text):
        parse_metadata(doc, ISSUER)
