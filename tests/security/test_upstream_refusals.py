"""Refusals after authentication name the resource, never where it lives: the client reads
``upstream web-1 ...``; the upstream's host and port and the gateway's files stay in the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Keys, Upstream, base_config, ssh_resource
from tests.support.gateway import Client, GatewayProcess

MISSING_KNOWN_HOSTS = "/nonexistent/sshgate-test/known_hosts"


@pytest.fixture(scope="module")
def gw(keys: Keys, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = base_config(keys, upstream)
    key_secret = f"FILE:{upstream.sshd.native_key}"
    config["resources"].append(
        ssh_resource(
            "web-nokh",
            upstream,
            [{"username": "sgtest", "secret": key_secret, "default": True}],
            host_key_policy={"known_hosts": MISSING_KNOWN_HOSTS},
        )
    )
    proc = GatewayProcess(
        tmp_path_factory.mktemp("gw-refusals"), config, env={"SGRO_PASSWORD": upstream.sshd.password}
    ).start()
    yield proc
    proc.stop()


@pytest.mark.parametrize(
    ("resource", "line", "where"),
    [
        ("down", "cannot connect to upstream down: Connection refused", "127.0.0.1:1"),
        (
            "wrong-key",
            "upstream wrong-key presented a host key that does not match its host_key_policy",
            None,
        ),
        ("bad-password", "upstream bad-password refused the login of native user sgro", None),
        (
            "web-nokh",
            "the upstream's known_hosts file cannot be read; ask an administrator",
            MISSING_KNOWN_HOSTS,
        ),
    ],
)
def test_refusal_names_the_resource_not_its_address(
    gw: GatewayProcess,
    keys: Keys,
    upstream: Upstream,
    tmp_path: Path,
    resource: str,
    line: str,
    where: str | None,
) -> None:
    where = where or f"127.0.0.1:{upstream.sshd.port}"
    result = Client(gw, keys.alice, tmp_path).ssh(f"alice+{resource}", "true", timeout=30)
    assert result.returncode == 1
    assert result.stderr == f"sshgate: {line}\n".encode(), result.stderr
    assert b"127.0.0.1" not in result.stderr and str(upstream.sshd.port).encode() not in result.stderr
    refused = gw.wait_event("session.refused", resource=resource, event_kind="upstream.error")
    assert where in refused["reason"]
