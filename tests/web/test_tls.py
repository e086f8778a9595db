"""The web app under ``web.tls``: served over TLS only, and its cookies are ``Secure`` (docs/api.md)."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import Keys, Upstream
from tests.support.net import free_port
from tests.support.oidc import OidcProvider
from tests.web.conftest import web_gateway


def self_signed(root: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = root / "web.crt", root / "web.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def test_tls_serves_the_api_and_sets_secure_cookies(tmp_path: Path, keys: Keys, upstream: Upstream) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    provider = OidcProvider(web_redirect=f"https://127.0.0.1:{port}/signin/callback")
    gateway = None
    try:
        gateway = web_gateway(
            tmp_path / "gw", keys, upstream, provider.issuer, port,
            web={"listen": f"127.0.0.1:{port}", "public_url": f"https://127.0.0.1:{port}",
                 "tls": {"cert": str(cert), "key": str(key)}},
        )  # fmt: skip
        trusted = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=trusted, timeout=10)
        conn.request("GET", "/api/v1/me")
        me = conn.getresponse()
        assert me.status == 401 and "error" in json.loads(me.read())
        conn.request("GET", "/signin")
        begin = conn.getresponse()
        begin.read()
        assert begin.status in (302, 303) and begin.headers["Location"].startswith(provider.issuer)
        cookies = begin.headers.get_all("Set-Cookie") or []
        assert cookies and all("Secure" in c and "HttpOnly" in c for c in cookies), cookies
        conn.close()
        # Plain HTTP on the TLS port gets no API answer: the handshake fails and the socket closes.
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        with pytest.raises((OSError, http.client.HTTPException)):
            plain.request("GET", "/api/v1/me")
            plain.getresponse()
        plain.close()
    finally:
        if gateway is not None:
            gateway.stop()
        provider.stop()
