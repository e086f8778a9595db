"""Who is connecting: the identity a login names, looked up in the configured directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from sshgate.config import Config, MachineConfig, UserConfig
from sshgate.login import Login

# The provider of identities configured in the file; the default in a login (README, "Security").
CONFIGURED_PROVIDER = "formal"


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated (or about to be) principal, as policies see it in ``input.user``."""

    type: Literal["human", "machine"]
    name: str
    provider: str
    login: str | None
    groups: tuple[str, ...] = ()
    known: bool = True
    signed_in_at: float | None = None  # when the provider vouched for a single-sign-on identity

    @property
    def email(self) -> str | None:
        return self.name if self.type == "human" else None

    def as_policy_input(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "type": self.type,
            "provider": self.provider,
            "login": self.login,
            "groups": list(self.groups),
        }
        doc["email" if self.type == "human" else "name"] = self.name
        if self.signed_in_at is not None:
            doc["signed_in_at"] = rfc3339(self.signed_in_at)
        return doc


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class IdentityProof:
    """What may prove an identity: public keys, CA keys (with the principal to match), token hashes.

    ``unusable`` says, for the audit log only, why a login has nothing that could prove it.
    """

    authorized_keys: tuple[str, ...] = ()
    ca_keys: tuple[str, ...] = ()
    principal: str = ""
    token_hashes: tuple[str, ...] = field(default=(), repr=False)
    unusable: str = ""


def lookup(config: Config, login: Login) -> tuple[Identity, IdentityProof]:
    """Map a parsed login to its identity and credentials. Unknown names, and logins naming
    another provider than the identity's, get no credentials (except CA-signed certificates for
    unlisted humans), so they fail authentication like a wrong key."""
    provider = CONFIGURED_PROVIDER
    kind: Literal["human", "machine"] = "machine" if login.kind == "machine" else "human"
    if login.provider not in (None, provider):
        reason = f"the login names provider {login.provider}; configured identities are {provider}"
        return Identity(kind, login.subject, login.provider, None, known=False), IdentityProof(
            unusable=reason
        )
    ca_keys = tuple(config.identities.user_ca_keys)
    if login.kind == "machine":
        machine = next((m for m in config.identities.machines if m.name == login.subject), None)
        return _machine(machine, login.subject, provider, ca_keys)
    user: UserConfig | None
    if login.kind == "alias":
        user = next(
            (u for u in config.identities.users if u.login and u.login.lower() == login.subject), None
        )
        if user is None:
            return (
                Identity("human", login.subject, provider, login.subject, known=False),
                IdentityProof(unusable="unknown user alias"),
            )
    else:
        user = next((u for u in config.identities.users if u.email == login.subject), None)
    if user is None:
        return (
            Identity("human", login.subject, provider, None, known=False),
            IdentityProof(ca_keys=ca_keys, principal=login.subject),
        )
    identity = Identity("human", user.email, provider, user.login, tuple(user.groups))
    return identity, IdentityProof(tuple(user.authorized_keys), ca_keys, user.email, tuple(user.tokens))


def _machine(
    machine: MachineConfig | None, name: str, provider: str, ca_keys: tuple[str, ...]
) -> tuple[Identity, IdentityProof]:
    if machine is None:
        return (
            Identity("machine", name, provider, None, known=False),
            IdentityProof(unusable="unknown machine"),
        )
    identity = Identity("machine", machine.name, provider, None, tuple(machine.groups))
    return identity, IdentityProof(
        tuple(machine.authorized_keys), ca_keys, machine.name, tuple(machine.tokens)
    )
