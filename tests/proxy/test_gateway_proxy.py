"""listen.proxy_protocol with real OpenSSH clients behind a miniature load balancer: the header's
client address is what the audit log, the recording and the policy see; untrusted senders and
hostile headers are dropped, and do not use up the proxy's own budget."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.support.gateway import Client, GatewayProcess
from tests.support.proxy import proxy, v1_header, v2_header

CLIENT = "203.0.113.9"
POLICY = f"""package formal.v2
import rego.v1

session := {{"action": "allow"}} if input.connection.client_ip == "{CLIENT}"
else := {{"action": "block", "type": "block_with_custom_message", "message": "wrong client address"}}
"""


def proxied_gateway(root: Path, keys: Keys, upstream: Upstream, trusted: list[str]) -> GatewayProcess:
    root.mkdir(parents=True, exist_ok=True)
    (root / "policy.rego").write_text(POLICY)
    config: dict[str, Any] = base_config(keys, upstream)
    config["listen"] = {"host": "127.0.0.1", "port": 0, "proxy_protocol": True, "trusted_proxies": trusted}
    config["policies"] = {"paths": [str(root / "policy.rego")]}
    config["limits"].update(max_unauthenticated=20)
    return GatewayProcess(root, config, env={"SGRO_PASSWORD": upstream.sshd.password}).start()


def through(client: Client, port: int) -> Client:
    """The same client, pointed at the proxy's port instead of the gateway's."""
    text = client.config.read_text().replace(f"Port {client.gateway.port}", f"Port {port}")
    client.config.write_text(text)
    hosts = client.known_hosts.read_text()
    client.known_hosts.write_text(hosts.replace(f"]:{client.gateway.port} ", f"]:{port} "))
    return client


@pytest.fixture(scope="module")
def gateway(keys: Keys, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Any:
    gw = proxied_gateway(tmp_path_factory.mktemp("proxied"), keys, upstream, ["127.0.0.0/8"])
    yield gw
    gw.stop()


@pytest.mark.parametrize("version", [1, 2])
def test_the_headers_client_is_the_one_everyone_sees(
    gateway: GatewayProcess, keys: Keys, tmp_path: Path, version: int
) -> None:
    header = v1_header((CLIENT, 50123)) if version == 1 else v2_header((CLIENT, 50123))
    before = len(gateway.events("auth.success", client_ip=CLIENT))
    with proxy(gateway.port, header) as port:
        alice = through(Client(gateway, keys.alice, tmp_path / "alice"), port)
        result = alice.ssh("alice+web-1", "echo proxied")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"proxied\n"
    success = gateway.wait_events("auth.success", before + 1, client_ip=CLIENT)[-1]
    start = gateway.wait_event("session.start", session_id=success["session_id"])
    assert start["client_ip"] == CLIENT
    docs = list(
        Path(gateway.config["data_dir"], "recordings").glob(f"*/{success['session_id']}/session.json")
    )
    assert len(docs) == 1 and json.loads(docs[0].read_text())["client_ip"] == CLIENT


def test_the_policy_judges_the_headers_client(gateway: GatewayProcess, keys: Keys, tmp_path: Path) -> None:
    with proxy(gateway.port, v2_header(("198.51.100.1", 1))) as port:
        result = through(Client(gateway, keys.alice, tmp_path / "alice"), port).ssh("alice+web-1", "true")
    assert result.returncode == 1
    assert result.stderr.startswith(b"sshgate: Blocked by policy")
    gateway.wait_event("auth.success", client_ip="198.51.100.1")


@pytest.mark.parametrize(
    ("header", "connected_to"),
    [
        (v1_header((CLIENT, 50123), ("198.51.100.20", 2200)), ("198.51.100.20", 2200)),
        (v2_header(("2001:db8::9", 50123), ("2001:db8::20", 22)), ("2001:db8::20", 22)),
        (v2_header(None), None),  # LOCAL: the gateway's own socket
    ],
)
def test_ssh_config_names_the_address_the_client_connected_to(
    gateway: GatewayProcess, keys: Keys, tmp_path: Path, header: bytes, connected_to: tuple[str, int] | None
) -> None:
    """Without public_address, what the header says the client connected to (the balancer), not
    the replica's own address."""
    host, port = connected_to or ("127.0.0.1", gateway.port)
    with proxy(gateway.port, header) as proxy_port:
        result = through(Client(gateway, keys.alice, tmp_path / "alice"), proxy_port).ssh(
            "alice", "formal ssh-config"
        )
    assert result.returncode == 0, result.stderr
    assert f"  HostName {host}\n  Port {port}\n" in result.stdout.decode()


def test_hostile_headers_are_dropped_fast_and_cost_the_proxy_nothing(
    gateway: GatewayProcess, keys: Keys, tmp_path: Path
) -> None:
    dropped = len(gateway.events("connection.dropped"))
    for junk in (b"SSH-2.0-OpenSSH_9.2\r\n", b"PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n", b"PROXY " + b"x" * 600):
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            sock.sendall(junk)
            assert sock.recv(100) == b""  # closed without a banner
        assert time.monotonic() - started < 1.0
    slow = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    slow.sendall(b"PROXY TCP4 ")
    started = time.monotonic()
    assert slow.recv(100) == b""
    assert 2.0 < time.monotonic() - started < 5.0
    slow.close()
    deadline = time.monotonic() + 5
    while len(gateway.events("connection.dropped")) < dropped + 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(gateway.events("connection.dropped")) == dropped + 4
    # Fifteen half-open headers from the proxy's own address (past any per-source cap of 10 it
    # would have as a client, within the 20 that may wait for a header): a client still gets in.
    flood = []
    for _ in range(15):
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
        sock.sendall(b"PROXY ")
        flood.append(sock)
    with proxy(gateway.port, v1_header((CLIENT, 40000))) as port:
        result = through(Client(gateway, keys.alice, tmp_path / "alice"), port).ssh("alice+web-1", "true")
    for sock in flood:
        sock.close()
    assert result.returncode == 0, result.stderr


def test_an_untrusted_sender_is_refused(keys: Keys, upstream: Upstream, tmp_path: Path) -> None:
    gw = proxied_gateway(tmp_path / "gw", keys, upstream, ["10.0.0.0/8"])
    try:
        with proxy(gw.port, v2_header((CLIENT, 1))) as port:
            result = through(Client(gw, keys.alice, tmp_path / "alice"), port).ssh("alice+web-1", "true")
        assert result.returncode == 255
        dropped = gw.wait_event("connection.dropped")
        assert (dropped["proxy_ip"], dropped["reason"]) == (
            "127.0.0.1",
            "the sender is not in listen.trusted_proxies",
        )
        assert gw.events("auth.success") == []
    finally:
        gw.stop()
