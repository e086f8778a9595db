"""Who may see and do what in the web app (docs/api.md, "Roles"). Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["admin", "viewer", "user"]


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in person: from the browser's session cookie (``csrf`` set) or a bearer ID token."""

    email: str
    groups: tuple[str, ...]
    role: Role
    csrf: str | None = None


def role_of(groups: Iterable[str], viewer_groups: Iterable[str], admin_groups: Iterable[str]) -> Role:
    """``admin_groups`` may also terminate, ``viewer_groups`` see every session, others their own."""
    mine = set(groups)
    if mine & set(admin_groups):
        return "admin"
    if mine & set(viewer_groups):
        return "viewer"
    return "user"


def identity_email(identity: object) -> str | None:
    """The email in ``idp:<provider>:human:<email>``, whichever provider; None for machines."""
    if not isinstance(identity, str):
        return None
    parts = identity.split(":", 3)
    if len(parts) != 4 or parts[0] != "idp" or parts[2] != "human" or "@" not in parts[3]:
        return None
    return parts[3].lower()


def may_view(principal: Principal, doc: Mapping[str, Any]) -> bool:
    """Viewers and admins see every session; everyone else the sessions of their own identity."""
    if principal.role in ("admin", "viewer"):
        return True
    return identity_email(doc.get("identity")) == principal.email


def may_terminate(principal: Principal) -> bool:
    return principal.role == "admin"


def owner_filter(principal: Principal) -> str | None:
    """The ``owner_email`` a session list is restricted to (None: everything)."""
    return None if principal.role in ("admin", "viewer") else principal.email
