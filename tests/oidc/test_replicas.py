"""SSO across replicas (issue 18): a key bound by signing in through replica A logs in through
replica B without a browser, and a revocation reaches B within a second."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.oidc.conftest import GatewayFactory, fresh_client, oidc_block, start_ssh
from tests.support.gateway import Client, GatewayProcess
from tests.support.oidc import CLIENT_SECRET, OidcProvider, Person
from tests.support.redis import RedisServer

ALICE = "idp:okta:human:alice@corp.com"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def fingerprint(key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(key)], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


def test_a_key_bound_through_one_replica_logs_in_through_another(
    oidc_gateway_factory: GatewayFactory, provider: OidcProvider, redis_server: RedisServer, tmp_path: Path
) -> None:
    state = {"url": redis_server.url, "hmac_key": "sso-replica-test-hmac-key-of-32-chars!", "session_ttl_s": 5}
    a: GatewayProcess = oidc_gateway_factory(oidc_block(provider.issuer), state=state)
    b: GatewayProcess = oidc_gateway_factory(oidc_block(provider.issuer), state=state)
    laptop = fresh_client(a, tmp_path, "alice-laptop")
    run = start_ssh(laptop, f"{ALICE}+web-1", "echo via-a")
    _, _, complete = run.sign_in_lines()
    Person("alice@corp.com").approve(complete)
    assert run.finish() == 0, run.stderr
    assert run.stdout == b"via-a\n"
    assert redis_server.cli("HLEN", "sshgate:bindings") == "1"
    sealed = redis_server.cli("HVALS", "sshgate:bindings")  # a MAC, then fingerprint and identity
    assert re.fullmatch(r"[0-9a-f]{64}\.\{.*\}", sealed) and fingerprint(laptop.key) in sealed
    assert CLIENT_SECRET not in sealed and "eyJ" not in sealed  # no secret, no token (JWTs start eyJ)

    # The same laptop, now pointed at replica B: BatchMode, no prompt can be shown, no browser.
    on_b = Client(b, laptop.key, tmp_path / "laptop-on-b")
    held = subprocess.Popen(on_b.ssh_argv(f"{ALICE}+web-1", "echo via-b; sleep 60"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        assert held.stdout is not None and held.stdout.readline() == b"via-b\n"
        success = b.wait_event("auth.success", method="oidc", key_fingerprint=fingerprint(laptop.key))
        assert success["identity"] == "alice@corp.com"
        # Revoked through replica A's configuration: B closes the connection within a second.
        revoke = subprocess.run(
            [sys.executable, "-m", "sshgate.cli", "keys", "revoke", fingerprint(laptop.key), "--config",
             str(a.config_path)], capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        revoked_at = time.time()  # the store changed before the CLI exits
        assert revoke.returncode == 0, revoke.stderr
        closed = b.wait_event("oidc.revoked", timeout=5)
        assert datetime.fromisoformat(closed["timestamp"]).timestamp() - revoked_at < 1.0
        held.wait(10)
        assert b"revoked" in (held.stderr.read() if held.stderr else b"")
    finally:
        if held.poll() is None:
            held.kill()
        held.wait(10)
    again = start_ssh(on_b, f"{ALICE}+web-1", "true")  # no longer bound: a sign-in is asked for
    try:
        again.sign_in_lines()
    finally:
        again.kill()
