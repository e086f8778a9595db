"""Native-user secrets (docs/configuration.md): read ``ENV:`` / ``FILE:`` at connect time, then classify.

Errors name the secret's *source* (which variable, which file) and never its content.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import asyncssh

ROLE_ARN_PREFIX = "arn:aws:iam::"


class SecretError(Exception):
    """A secret that cannot be read or understood; the message never contains the secret."""


@dataclass(frozen=True, slots=True)
class Password:
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class PrivateKey:
    key: asyncssh.SSHKey = field(repr=False)
    certificate: asyncssh.SSHCertificate | None = None


@dataclass(frozen=True, slots=True)
class AmbientIam:
    """The gateway's own AWS credentials (or, for SSH, a key pushed with Instance Connect)."""


@dataclass(frozen=True, slots=True)
class AssumeRole:
    role_arn: str


NativeCredential = Password | PrivateKey | AmbientIam | AssumeRole


def read_indirect(secret: str) -> tuple[str, str]:
    """Follow ``ENV:NAME`` / ``FILE:/path``; return the text and a description of where it came from."""
    if secret.startswith("ENV:"):
        name = secret[4:]
        value = os.environ.get(name)
        if value is None:
            raise SecretError(f"environment variable {name} is not set")
        return value, f"environment variable {name}"
    if secret.startswith("FILE:"):
        path = secret[5:]
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read(), f"file {path}"
        except OSError as exc:
            raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None
    return secret, "the configured secret"


def _private_key(text: str, where: str) -> asyncssh.SSHKey:
    try:
        return asyncssh.import_private_key(text)
    except (asyncssh.KeyImportError, ValueError):
        raise SecretError(f"{where} does not hold a usable private key") from None


def parse_secret(secret: str) -> NativeCredential:
    """Classify a configured secret after following ``ENV:`` / ``FILE:``."""
    if secret == "iam":
        return AmbientIam()
    if secret.startswith(ROLE_ARN_PREFIX):
        return AssumeRole(secret)
    text, where = read_indirect(secret)
    stripped = text.strip()
    if stripped == "iam":
        return AmbientIam()
    if stripped.startswith(ROLE_ARN_PREFIX):
        return AssumeRole(stripped)
    if stripped.startswith("-----BEGIN "):
        return PrivateKey(_private_key(stripped, where))
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError:
            raise SecretError(f"{where} looks like JSON but does not parse") from None
        if (
            not isinstance(doc, dict)
            or not isinstance(doc.get("key"), str)
            or not isinstance(doc.get("cert"), str)
        ):
            raise SecretError(
                f'{where}: a key+certificate secret is {{"key": PEM, "cert": "...-cert-v01@openssh.com ..."}}'
            )
        key = _private_key(doc["key"], where)
        try:
            cert = asyncssh.import_certificate(doc["cert"])
        except (asyncssh.KeyImportError, ValueError):
            raise SecretError(f"{where} does not hold a usable OpenSSH certificate") from None
        return PrivateKey(key, cert)
    if secret.startswith("FILE:"):
        # Files usually end with a newline that is not part of the password.
        text = text.rstrip("\r\n")
    return Password(text)
