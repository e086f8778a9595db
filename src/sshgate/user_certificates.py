"""User certificates: signed by a configured CA, valid now, and naming the identity exactly.

A principal is compared as a string, never as a pattern: a certificate for ``*@corp.com`` or a
login containing ``*`` must not stand for anyone else. Emails compare ignoring ASCII case only
(``str.lower`` would also fold characters such as the Kelvin sign into ASCII letters).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import asyncssh
from asyncssh.public_key import CERT_TYPE_USER, SSHOpenSSHCertificate

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class CertificateRefused(Exception):
    """A certificate that does not prove the identity; the message is for the audit log."""


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What ``auth.success`` records about the certificate that proved an identity."""

    key_id: str
    serial: int
    ca_fingerprint: str
    principal: str


def principal_matches(principal: str, wanted: str, *, ignore_case: bool) -> bool:
    """Exact string equality, optionally ignoring ASCII case; no character is special."""
    if ignore_case:
        return principal.translate(_ASCII_LOWER) == wanted.translate(_ASCII_LOWER)
    return principal == wanted


def check_user_certificate(
    cert: asyncssh.SSHCertificate,
    ca_keys: Sequence[asyncssh.SSHKey],
    wanted: str,
    *,
    ignore_case: bool,
    client_ip: str,
) -> CertificateFacts:
    """Accept ``cert`` for the identity ``wanted`` (an email or machine name), or raise
    :class:`CertificateRefused` saying why.

    The CA's signature over the certificate was checked when it was decoded; here: an OpenSSH
    user certificate, signed by one of ``ca_keys``, inside its validity period, with a principal
    equal to ``wanted``, and from an address its ``source-address`` option allows.
    """
    if not isinstance(cert, SSHOpenSSHCertificate):
        raise CertificateRefused("only OpenSSH certificates are accepted")
    signer = cert.signing_key.public_data
    if not any(signer == ca.public_data for ca in ca_keys):
        raise CertificateRefused("signed by a CA that is not in user_ca_keys")
    try:
        cert.validate(CERT_TYPE_USER, None)  # type and validity period; principals below
    except ValueError as exc:
        raise CertificateRefused(str(exc)) from None
    principal = next(
        (p for p in cert.principals if principal_matches(p, wanted, ignore_case=ignore_case)), None
    )
    if principal is None:
        raise CertificateRefused(f"no principal equals {wanted} (principals: {list(cert.principals)})")
    allowed = cert.options.get("source-address")
    if allowed and not _address_in(client_ip, allowed):
        raise CertificateRefused(f"source-address does not allow {client_ip}")
    return CertificateFacts(
        # asyncssh keeps the key id and serial without public accessors.
        key_id=cert._key_id,
        serial=cert._serial,
        ca_fingerprint=cert.signing_key.get_fingerprint("sha256"),
        principal=principal,
    )


def _address_in(client_ip: str, networks: object) -> bool:
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return isinstance(networks, Sequence) and any(address in network for network in networks)
