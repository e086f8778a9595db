"""One sign-in: a device flow, then the checks that decide whether it may become this login.

:func:`admit` is the pure part: the token's email must be the login's, in ``allowed_domains``,
and for a step-up the provider's ``auth_time`` must be within ``mfa.max_age_s`` (providers may
ignore ``prompt=login`` at the device endpoint, so freshness is the gateway's own check).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sshgate.oidc import errors
from sshgate.oidc.client import OidcClient
from sshgate.oidc.device import DeviceAuthorization
from sshgate.oidc.idtoken import Person


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A person the provider vouched for, as the gateway will bind and show them."""

    provider: str
    email: str
    groups: tuple[str, ...]
    signed_in_at: float
    auth_time: int | None = None


def admit(
    person: Person,
    expected_email: str,
    allowed_domains: list[str],
    now: float,
    max_age_s: float | None = None,
) -> None:
    """Refuse a sign-in that may not become ``expected_email`` (already lower-case)."""
    domain = person.email.rsplit("@", 1)[1]
    if allowed_domains and domain not in allowed_domains:
        raise errors.refused(f"{person.email} is outside the allowed domains", f"domain {domain} not allowed")
    if person.email != expected_email:
        raise errors.refused(
            f"you signed in as {person.email}, not {expected_email}",
            f"token email {person.email} is not the login's {expected_email}",
        )
    if max_age_s is not None:
        if person.auth_time is None:
            raise errors.refused("the provider did not say when you signed in", "no auth_time for a step-up")
        if now - person.auth_time > max_age_s + 5:
            raise errors.refused(
                "the provider did not ask you to sign in again; try once more",
                f"auth_time {int(now - person.auth_time)} s old, mfa.max_age_s {max_age_s:g}",
            )


class SignIn:
    """One device flow for one expected person; ``step_up`` asks for a fresh authentication."""

    def __init__(self, client: OidcClient, expected_email: str, step_up: bool = False) -> None:
        self.client = client
        self.expected_email = expected_email
        self.step_up = step_up

    async def begin(self) -> DeviceAuthorization:
        extra: dict[str, str] = {}
        if self.step_up:
            mfa = self.client.config.mfa
            extra = {"max_age": str(mfa.max_age_s), "prompt": "login"}
            if mfa.acr_values:
                extra["acr_values"] = mfa.acr_values
        return await self.client.start(extra)

    async def finish(self, authorization: DeviceAuthorization) -> SignedIn:
        tokens = await self.client.wait_for_tokens(authorization)
        found = await self.client.person(tokens)
        config = self.client.config
        now = time.time()
        admit(found, self.expected_email, config.allowed_domains, now,
              config.mfa.max_age_s if self.step_up else None)  # fmt: skip
        return SignedIn(config.name, found.email, found.groups, now, found.auth_time)
