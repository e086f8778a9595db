"""Shared fixtures: a real OpenSSH sshd upstream, the gateway as a real process, real clients."""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sshgate.tokens import new_token
from tests.support.gateway import Client, GatewayProcess, pub, user_key
from tests.support.sshd import Sshd, keygen, sign_cert, start_sshd

# A suite started in the background by a non-interactive shell (`./dev test &`, some CI runners)
# inherits SIGINT ignored, and so would every gateway, demo and remote shell a test starts: a test
# that stops one with Ctrl-C's signal would wait forever. A child inherits an ignored signal but
# not a handler, so handling it here gives them the default back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    # Not under pytest's private (0700) temp dir: sshd reads authorized_keys as the test account.
    root = Path(tempfile.mkdtemp(prefix="sshgate-sshd-"))
    root.chmod(0o755)
    server = start_sshd(root)
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class Keys:
    root: Path
    alice: Path
    john: Path
    bot: Path
    stranger: Path
    gateway_ca: Path
    alice_token: str
    alice_token_hash: str


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    root = tmp_path_factory.mktemp("keys")
    token, token_hash = new_token()
    return Keys(
        root,
        user_key(root, "alice"),
        user_key(root, "john"),
        user_key(root, "bot"),
        user_key(root, "stranger"),
        keygen(root / "gateway_user_ca", "gateway-user-ca"),
        token,
        token_hash,
    )


@dataclass
class Upstream:
    """Native secrets and trust material for the resources pointing at the test sshd."""

    sshd: Sshd
    known_hosts: Path
    cert_secret_file: Path


@pytest.fixture(scope="session")
def upstream(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Upstream:
    root = tmp_path_factory.mktemp("upstream-material")
    known_hosts = root / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line())
    cert_key = keygen(root / "cert_native", "cert-native")
    cert = sign_cert(sshd.user_ca, Path(str(cert_key) + ".pub"), "sshgate-native", "sgtest")
    cert_file = root / "cert_secret.json"
    cert_file.write_text(json.dumps({"key": cert_key.read_text(), "cert": cert.read_text().strip()}))
    cert_file.chmod(0o600)
    return Upstream(sshd, known_hosts, cert_file)


def ssh_resource(name: str, up: Upstream, native_users: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "name": name,
        "type": "ssh",
        "hostname": "127.0.0.1",
        "port": up.sshd.port,
        "host_key_policy": {"known_hosts": str(up.known_hosts)},
        "native_users": native_users,
        "connect_timeout_s": 5,
    }
    resource.update(extra)
    return resource


def base_config(keys: Keys, up: Upstream) -> dict[str, Any]:
    """The configuration most tests share: three identities and resources for every secret form."""
    key_secret = f"FILE:{up.sshd.native_key}"
    return {
        # Tests fail logins on purpose; only the lockout test (its own gateway) wants a low limit.
        "limits": {"auth_failures_before_lockout": 1000},
        "identities": {
            "users": [
                {
                    "email": "alice@corp.com",
                    "login": "alice",
                    "groups": ["dev"],
                    "authorized_keys": [pub(keys.alice)],
                    "tokens": [keys.alice_token_hash],
                },
                {
                    "email": "john@corp.com",
                    "login": "john",
                    "groups": ["ops"],
                    "authorized_keys": [pub(keys.john)],
                },
            ],
            "machines": [{"name": "ci-bot", "authorized_keys": [pub(keys.bot)]}],
            "user_ca_keys": [pub(keys.gateway_ca)],
        },
        "resources": [
            ssh_resource(
                "web-1",
                up,
                [
                    {"username": "sgtest", "secret": key_secret, "default": True},
                    {"username": "sgro", "secret": "ENV:SGRO_PASSWORD", "groups": ["ops"]},
                ],
                tags={"env": "prod"},
            ),
            ssh_resource(
                "web-cert",
                up,
                [{"username": "sgtest", "secret": f"FILE:{up.cert_secret_file}", "default": True}],
            ),
            ssh_resource(
                "web-pinned",
                up,
                [{"username": "sgtest", "secret": key_secret, "default": True}],
                host_key_policy={"host_keys": [up.sshd.host_pub]},
            ),
            ssh_resource(
                "web-hostca",
                up,
                [{"username": "sgtest", "secret": key_secret, "default": True}],
                host_key_policy={"host_ca_keys": [up.sshd.host_ca_pub]},
            ),
            ssh_resource(
                "web-insecure",
                up,
                [{"username": "sgtest", "secret": key_secret, "default": True}],
                host_key_policy={"insecure_accept_any": True},
            ),
            ssh_resource(
                "web-agent",
                up,
                [{"username": "sgtest", "secret": key_secret, "default": True}],
                allow_agent_forwarding=True,
            ),
            ssh_resource(
                "bad-password", up, [{"username": "sgro", "secret": "not-the-password", "default": True}]
            ),
            ssh_resource(
                "wrong-key",
                up,
                [{"username": "sgtest", "secret": key_secret, "default": True}],
                host_key_policy={"host_keys": [pub(keys.stranger)]},
            ),
            ssh_resource(
                "ops-only", up, [{"username": "sgro", "secret": "ENV:SGRO_PASSWORD", "groups": ["ops"]}]
            ),
            {
                "name": "down",
                "type": "ssh",
                "hostname": "127.0.0.1",
                "port": 1,
                "host_key_policy": {"insecure_accept_any": True},
                "native_users": [{"username": "sgtest", "secret": key_secret, "default": True}],
                "connect_timeout_s": 3,
            },
        ],
    }


@pytest.fixture(scope="session")
def gateway(
    keys: Keys, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """The shared gateway; tests that change configuration or kill it start their own."""
    proc = GatewayProcess(
        tmp_path_factory.mktemp("gateway"),
        base_config(keys, upstream),
        env={"SGRO_PASSWORD": upstream.sshd.password},
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def alice(gateway: GatewayProcess, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(gateway, keys.alice, tmp_path_factory.mktemp("alice"))


@pytest.fixture(scope="session")
def john(gateway: GatewayProcess, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(gateway, keys.john, tmp_path_factory.mktemp("john"))


@pytest.fixture
def remote_dir() -> Iterator[Path]:
    """A fresh directory in the upstream account's home (same machine, so the test can look)."""
    path = Path("/home/sgtest") / f"xfer-{secrets.token_hex(4)}"
    path.mkdir()
    shutil.chown(path, "sgtest", "sgtest")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_upstream(command: str, user: str = "sgtest") -> str:
    """Run a command on the upstream host directly (same machine), to check what arrived there."""
    return subprocess.run(["su", "-", user, "-c", command], capture_output=True, text=True, check=True).stdout
