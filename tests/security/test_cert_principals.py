"""User certificates prove exactly the identity their principal names: a CA-signed certificate for
mallory@corp.com must not log in as ``*@corp.com``, ``m?llory@corp.com`` or anyone else."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import asyncssh
import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.security.attacker import attempt, signing_without_query
from tests.support.gateway import Client, GatewayProcess
from tests.support.sshd import keygen, sign_cert


def _cert_client(
    gateway: GatewayProcess, keys: Keys, root: Path, principal: str, *extra: str, ca: Path | None = None
) -> Client:
    key = keygen(root / "certuser", "certuser")
    cert = sign_cert(ca or keys.gateway_ca, Path(f"{key}.pub"), "mallory-laptop", principal, extra=extra)
    client = Client(gateway, key, root)
    client.config.write_text(client.config.read_text() + f"  CertificateFile {cert}\n")
    return client


@pytest.mark.parametrize(
    "login",
    [
        "idp:human:*@corp.com+web-1",
        "idp:human:m?llory@corp.com+web-1",
        "idp:human:[m]allory@corp.com+web-1",
        "idp:human:mallory@corp.com,alice@corp.com+web-1",
        "idp:human:!alice@corp.com+web-1",
        "idp:machine:*+web-1",
    ],
)
def test_pattern_logins_are_refused_before_authentication(
    gateway: GatewayProcess, keys: Keys, tmp_path: Path, login: str
) -> None:
    mallory = _cert_client(gateway, keys, tmp_path, "mallory@corp.com")
    result = mallory.ssh(login, "id -un")
    assert result.returncode == 255 and result.stdout == b""
    assert b"invalid login: login contains a pattern character" in result.stderr, result.stderr
    event = gateway.wait_event("login.invalid", login=login)
    assert "pattern character" in event["reason"]
    assert not [e for e in gateway.events("auth.success") if any(c in e["identity"] for c in "*?[!,")]


@pytest.mark.parametrize(
    ("principal", "login", "accepted"),
    [
        ("Mallory@CORP.com", "idp:human:mallory@corp.com+web-1", True),  # emails ignore ASCII case
        ("*@corp.com", "idp:human:mallory@corp.com+web-1", False),  # a principal is no pattern either
        ("mallory@corp.com.evil.example", "idp:human:mallory@corp.com+web-1", False),
        ("\u212aarl@corp.com", "idp:human:karl@corp.com+web-1", False),  # KELVIN SIGN lower()s to k
        ("ci-bot", "idp:machine:ci-bot+web-1", True),
        ("CI-BOT", "idp:machine:ci-bot+web-1", False),  # machine names are exact
        ("alice@corp.com", "alice+web-1", True),  # an alias login's principal is the user's email
    ],
)
def test_principals_compare_as_strings(
    gateway: GatewayProcess, keys: Keys, tmp_path: Path, principal: str, login: str, accepted: bool
) -> None:
    client = _cert_client(gateway, keys, tmp_path, principal)
    result = client.ssh(login, "id -un")
    if accepted:
        assert result.stdout == b"sgtest\n", result.stderr
    else:
        assert result.returncode == 255 and b"Permission denied" in result.stderr, result.stderr


def test_certificate_login_is_audited_with_key_id_serial_and_ca(
    gateway: GatewayProcess, keys: Keys, tmp_path: Path
) -> None:
    client = _cert_client(gateway, keys, tmp_path, "mallory@corp.com", "-z", "4242")
    assert client.ssh("idp:human:mallory@corp.com+web-1", "id -un").stdout == b"sgtest\n"
    event = gateway.wait_event("auth.success", method="certificate", cert_serial=4242)
    ca_line = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{keys.gateway_ca}.pub"], capture_output=True, text=True
    ).stdout
    assert event["cert_ca_fingerprint"] == ca_line.split()[1]
    assert event["cert_key_id"] == "mallory-laptop"
    assert event["cert_principal"] == "mallory@corp.com"
    assert event["identity"] == "mallory@corp.com"
    start = gateway.wait_event("session.start", session_id=event["session_id"])
    assert start["identity"] == "mallory@corp.com"


def test_refused_signed_certificate_is_a_failure(gateway: GatewayProcess, keys: Keys, tmp_path: Path) -> None:
    """Stock ssh only queries a certificate; one sent signed and refused is a failed attempt."""
    key = keygen(tmp_path / "signed", "signed")
    cert = sign_cert(keys.gateway_ca, Path(f"{key}.pub"), "mallory-signed", "mallory@corp.com")
    pair = (asyncssh.read_private_key(key), asyncssh.read_certificate(cert))
    with signing_without_query():
        outcome = asyncio.run(attempt(gateway.port, "idp:human:alice@corp.com+web-1", keys=[pair]))
    assert not outcome.ok
    failure = gateway.wait_event("auth.failure", method="certificate", identity="alice@corp.com")
    assert failure["reason"].startswith("certificate refused: no principal equals alice@corp.com")


@pytest.mark.parametrize(
    ("option", "accepted"),
    [("source-address=127.0.0.0/8", True), ("source-address=10.0.0.0/8", False)],
)
def test_certificate_source_address(
    gateway: GatewayProcess, keys: Keys, tmp_path: Path, option: str, accepted: bool
) -> None:
    client = _cert_client(gateway, keys, tmp_path, "mallory@corp.com", "-O", option)
    result = client.ssh("idp:human:mallory@corp.com+web-1", "id -un")
    assert (result.stdout == b"sgtest\n") is accepted, result.stderr


def test_certificate_from_another_ca_is_refused(gateway: GatewayProcess, keys: Keys, tmp_path: Path) -> None:
    other_ca = keygen(tmp_path / "other_ca", "other-ca")
    client = _cert_client(gateway, keys, tmp_path, "alice@corp.com", ca=other_ca)
    result = client.ssh("idp:human:alice@corp.com+web-1", "id -un")
    assert result.returncode == 255 and b"Permission denied" in result.stderr


def test_recorded_identity_is_the_certificate_holder(
    gateway: GatewayProcess, keys: Keys, tmp_path: Path
) -> None:
    client = _cert_client(gateway, keys, tmp_path, "mallory@corp.com", "-z", "77")
    assert client.ssh("idp:human:mallory@corp.com+web-1", "echo rec").stdout == b"rec\n"
    session_id = gateway.wait_event("auth.success", cert_serial=77)["session_id"]
    recordings = Path(gateway.config["data_dir"]) / "recordings"
    (manifest,) = recordings.glob(f"[0-9]*/{session_id}/session.json")
    doc = json.loads(manifest.read_text())
    assert (doc["user"], doc["identity"]) == ("mallory@corp.com", "idp:formal:human:mallory@corp.com")


def test_revoked_certificates_are_refused_as_the_revocation_list_changes(
    keys: Keys, upstream: Upstream, tmp_path: Path
) -> None:
    """identities.revoked_keys: a KRL from ssh-keygen -k, re-read when it changes (as sshd does)."""
    krl, spec = tmp_path / "revoked.krl", tmp_path / "spec"

    def revoke(*lines: str) -> None:
        spec.write_text("".join(f"{line}\n" for line in lines))
        subprocess.run(["ssh-keygen", "-k", "-f", str(krl), "-s", f"{keys.gateway_ca}.pub", str(spec)],
                       check=True, capture_output=True)  # fmt: skip

    revoke("serial: 31", "id: mallory-laptop-2")
    config = base_config(keys, upstream)
    config["identities"]["revoked_keys"] = str(krl)
    gateway = GatewayProcess(tmp_path / "gw", config).start()
    try:
        login = "idp:human:mallory@corp.com+web-1"
        lost = _cert_client(gateway, keys, tmp_path, "mallory@corp.com", "-z", "31")
        result = lost.ssh(login, "id -un")
        assert result.returncode == 255 and b"Permission denied" in result.stderr, result.stderr
        key = keygen(tmp_path / "signed", "signed")
        cert = sign_cert(keys.gateway_ca, Path(f"{key}.pub"), "mallory-laptop-2", "mallory@corp.com", extra=("-z", "5"))
        with signing_without_query():
            outcome = asyncio.run(
                attempt(gateway.port, login, keys=[(asyncssh.read_private_key(key), asyncssh.read_certificate(cert))])
            )
        assert not outcome.ok
        failure = gateway.wait_event("auth.failure", method="certificate", identity="mallory@corp.com")
        assert failure["reason"] == "certificate key id 'mallory-laptop-2' revoked"
        revoke("serial: 32")  # serial 31 taken off the list: no reload needed
        assert lost.ssh(login, "id -un").stdout == b"sgtest\n"
    finally:
        gateway.stop()
