"""The login grammar of docs/login.md, parsed without I/O.

OpenSSH splits ``user@host`` at the last ``@``, so the whole login (identity, native user and
resource) reaches the gateway as the SSH user name. Parsing happens before authentication, so
a malformed login is refused before any secret is checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from sshgate.refusal import Refusal

MAX_LOGIN_BYTES = 256
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
_NAME = re.compile(NAME_PATTERN)
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9._%+-]{1,64}")
_DOMAIN = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_KINDS = ("human", "machine")
# Pattern characters of OpenSSH and asyncssh principal and user matching: a login holding one
# could name several identities wherever something downstream treats it as a pattern.
GLOB_CHARACTERS = "*?[!,"

LoginKind = Literal["human", "machine", "alias"]


class LoginError(Refusal, ValueError):
    """A login that does not follow the grammar; the message is safe to show the client."""


@dataclass(frozen=True, slots=True)
class Login:
    """A parsed login. ``subject`` is the lower-cased email, machine name or user alias."""

    kind: LoginKind
    subject: str
    provider: str | None = None
    native_user: str | None = None
    resource: str | None = None


def is_name(text: str) -> bool:
    """True when ``text`` is a valid resource, native-user, machine or alias name."""
    return _NAME.fullmatch(text) is not None


def _name(text: str, what: str) -> str:
    if not is_name(text):
        raise LoginError(f"invalid {what} {text!r}: use letters, digits, '.', '_' or '-' (at most 63)")
    return text


def _split_suffix(rest: str) -> tuple[str | None, str | None]:
    """Parse ``["@" native-user] ["+" resource]``, the tail every login form shares."""
    native: str | None = None
    resource: str | None = None
    if "+" in rest:
        rest, resource = rest.split("+", 1)
        _name(resource, "resource")
    if rest:
        if not rest.startswith("@"):
            raise LoginError(f"unexpected {rest!r}: a native user is written '@name', a resource '+name'")
        native = _name(rest[1:], "native user")
    return native, resource


def _name_then_suffix(text: str, what: str) -> tuple[str, str | None, str | None]:
    cut = min((i for i in (text.find("@"), text.find("+")) if i >= 0), default=len(text))
    native, resource = _split_suffix(text[cut:])
    return _name(text[:cut], what), native, resource


def _parse_email_tail(text: str) -> tuple[str, str | None, str | None]:
    local, sep, after = text.partition("@")
    if not sep or not local:
        raise LoginError("a human login needs an email address: idp:human:NAME@DOMAIN")
    if _EMAIL_LOCAL.fullmatch(local) is None:
        raise LoginError(f"invalid email address {text!r}")
    domain_match = _DOMAIN.match(after)
    if domain_match is None or domain_match.end() == 0:
        raise LoginError(f"invalid email domain in {text!r}")
    domain = domain_match.group(0)
    native, resource = _split_suffix(after[domain_match.end() :])
    return f"{local}@{domain}".lower(), native, resource


def parse_login(raw: str) -> Login:
    """Parse an SSH user name into a :class:`Login`, or raise :class:`LoginError`."""
    if not raw:
        raise LoginError("empty login")
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_LOGIN_BYTES:
        raise LoginError(f"login longer than {MAX_LOGIN_BYTES} bytes")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F or ord(ch) > 0x7E for ch in raw):
        raise LoginError("login contains a control, space or non-ASCII character")
    if any(ch in GLOB_CHARACTERS for ch in raw):
        raise LoginError("login contains a pattern character (* ? [ ! ,): a login names one identity")
    if not raw.startswith("idp:"):
        alias, native, resource = _name_then_suffix(raw, "user alias")
        return Login("alias", alias.lower(), None, native, resource)
    parts = raw[4:].split(":")
    if len(parts) == 2:
        provider, (kind, tail) = None, parts
    elif len(parts) == 3:
        provider, kind, tail = parts
        _name(provider, "identity provider")
    else:
        raise LoginError("an idp login reads idp:[PROVIDER:]human:EMAIL or idp:[PROVIDER:]machine:NAME")
    if kind not in _KINDS:
        raise LoginError(f"unknown identity kind {kind!r}: use 'human' or 'machine'")
    if kind == "human":
        email, native, resource = _parse_email_tail(tail)
        return Login("human", email, provider, native, resource)
    machine, native, resource = _name_then_suffix(tail, "machine name")
    return Login("machine", machine, provider, native, resource)


def login_for(login: Login, resource: str) -> str:
    """The login reaching ``resource`` as the same identity, in the form the client used (alias or
    ``idp:…``, provider kept) and without ``@native-user``: each resource resolves its own.

    ``formal ssh-config`` writes it as ``User``, so scp, sftp and rsync need nothing else.
    """
    if login.kind == "alias":
        base = login.subject
    else:
        provider = f"{login.provider}:" if login.provider else ""
        base = f"idp:{provider}{login.kind}:{login.subject}"
    return f"{base}+{_name(resource, 'resource')}"
