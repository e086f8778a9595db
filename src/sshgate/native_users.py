"""Which account the gateway logs in as upstream (docs/configuration.md), decided without I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sshgate.config import NativeUser
from sshgate.identity import Identity
from sshgate.refusal import Refusal

Source = Literal["explicit", "user", "group", "default", "ambient"]
# What an ec2 / ecs resource without native_users acts as: the gateway's own AWS credentials.
AMBIENT = NativeUser(username="iam", secret="iam", default=True)


class NoNativeUser(Refusal):
    """No native user may be used; the message is safe to show the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message, event="native_user.none")


@dataclass(frozen=True, slots=True)
class NativeChoice:
    user: NativeUser
    source: Source


def resolve_native_user(
    resource_name: str,
    native_users: list[NativeUser],
    identity: Identity,
    requested: str | None,
    ambient: bool = False,
) -> NativeChoice:
    """``@native`` / ``--native-user`` → own assignment → a group's → the default → with
    ``ambient`` (an ec2 / ecs resource) and no native users at all, ``iam`` → refused."""
    if ambient and not native_users and requested in (None, AMBIENT.username):
        return NativeChoice(AMBIENT, "ambient")
    if requested is not None:
        for native in native_users:
            if native.username == requested:
                return NativeChoice(native, "explicit")
        raise NoNativeUser(f"no native user {requested} on {resource_name}")
    for native in native_users:
        if identity.name.lower() in native.users:
            return NativeChoice(native, "user")
    groups = set(identity.groups)
    for native in native_users:
        if groups & set(native.groups):
            return NativeChoice(native, "group")
    for native in native_users:
        if native.default:
            return NativeChoice(native, "default")
    raise NoNativeUser(f"no native user for you on {resource_name}")
