"""Rego policies end to end: session blocks with the policy's message, request-stage blocks."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Keys, Upstream, base_config, ssh_resource
from tests.support.gateway import Client, GatewayProcess, pub
from tests.support.net import free_port, wait_port
from tests.support.tcp import echo_server

REPO_POLICIES = str(Path(__file__).resolve().parents[2] / "policies")

GROUP_RULE = """package formal.v2

import rego.v1

# A test-only rule in the shipped composition style: web-1 is for the dev group.
session_block contains "web-1 is for the dev group" if {
\tinput.resource.name == "web-1"
\tnot "dev" in input.user.groups
}
"""


@pytest.fixture(scope="module")
def policy_gateway(
    keys: Keys, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("policy-gw")
    (root / "extra").mkdir()
    (root / "extra" / "group.rego").write_text(GROUP_RULE)
    config = base_config(keys, upstream)
    key = f"FILE:{upstream.sshd.native_key}"
    config["resources"].append(
        ssh_resource(
            "app",
            upstream,
            [{"username": "sgtest", "secret": key, "default": True}, {"username": "devops", "secret": key}],
        )
    )
    config["identities"]["users"].append(
        {"email": "audrey@corp.com", "groups": ["auditors", "dev"], "authorized_keys": [pub(keys.stranger)]}
    )
    config["policies"] = {"paths": [REPO_POLICIES, str(root / "extra")]}
    gw = GatewayProcess(root / "gw", config).start()
    yield gw
    gw.stop()


def test_formal_example_blocks_john_as_devops(
    policy_gateway: GatewayProcess, keys: Keys, tmp_path: Path
) -> None:
    john = Client(policy_gateway, keys.john, tmp_path / "john")
    alice = Client(policy_gateway, keys.alice, tmp_path / "alice")
    blocked = john.ssh("idp:formal:human:john@corp.com@devops+app", "id -un")
    assert blocked.returncode == 1
    assert blocked.stderr == b"sshgate: Blocked by policy: john@corp.com may not use the devops account\n"
    event = policy_gateway.wait_event("policy.decision", action="block", native_user="devops")
    assert event["message"] == "john@corp.com may not use the devops account"
    allowed = alice.ssh("idp:formal:human:alice@corp.com@devops+app", "id -un")
    assert allowed.stdout == b"devops\n", allowed.stderr


def test_group_rule(policy_gateway: GatewayProcess, keys: Keys, tmp_path: Path) -> None:
    john = Client(policy_gateway, keys.john, tmp_path / "john")
    alice = Client(policy_gateway, keys.alice, tmp_path / "alice")
    assert (
        john.ssh("john+web-1", "true").stderr == b"sshgate: Blocked by policy: web-1 is for the dev group\n"
    )
    assert alice.ssh("alice+web-1", "echo ok").stdout == b"ok\n"
    listed = john.ssh("john", "formal list").stdout.decode().splitlines()
    assert not any(line.startswith("web-1\t") for line in listed)
    assert "app\tssh\tsgtest" in listed


def test_request_stage_blocks_one_exec(policy_gateway: GatewayProcess, keys: Keys, tmp_path: Path) -> None:
    alice = Client(policy_gateway, keys.alice, tmp_path / "alice")
    blocked = alice.ssh("alice+app", "shutdown -h now")
    assert blocked.returncode == 1
    assert blocked.stderr == b'sshgate: Blocked by policy: "shutdown -h now" needs the sre group\n'
    policy_gateway.wait_event("request.blocked", kind="exec", command="shutdown -h now")
    assert alice.ssh("alice+app", "echo fine").stdout == b"fine\n"


def test_request_stage_blocks_forward_target(
    policy_gateway: GatewayProcess, keys: Keys, tmp_path: Path
) -> None:
    alice = Client(policy_gateway, keys.alice, tmp_path / "alice")
    with echo_server() as target:
        local = free_port()
        proc = subprocess.Popen(
            alice.ssh_argv(
                "alice+app",
                options=["-N", "-L", f"127.0.0.1:{local}:127.0.0.1:{target}", "-o", "LogLevel=INFO"],
            ),
            stderr=subprocess.PIPE,
        )
        try:
            wait_port(local)
            with socket.create_connection(("127.0.0.1", local), timeout=10) as sock:
                assert sock.recv(10) == b""  # the channel was refused, OpenSSH closes the socket
            event = policy_gateway.wait_event("request.blocked", kind="port_forward", port=target)
            assert event["message"] == f"port forwarding to 127.0.0.1:{target} is not allowed"
        finally:
            proc.terminate()
            try:
                _, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:  # ssh -N under load can outlive SIGTERM; its stderr is what counts
                proc.kill()
                _, err = proc.communicate()
        assert b"Blocked by policy: port forwarding to" in err


def test_engine_down_denies_with_policy_unavailable(keys: Keys, upstream: Upstream, tmp_path: Path) -> None:
    config = base_config(keys, upstream)
    config["policies"] = {"engine": "opa", "opa_url": f"http://127.0.0.1:{free_port()}", "timeout_ms": 300}
    gw = GatewayProcess(tmp_path / "gw", config).start()
    try:
        alice = Client(gw, keys.alice, tmp_path / "alice")
        result = alice.ssh("alice+web-1", "true")
        assert result.returncode == 1
        assert result.stderr == b"sshgate: Blocked by policy: policy unavailable\n"
        event = gw.wait_event("policy.decision", action="block")
        assert event["reason"] and event["reason"] != "policy unavailable"
    finally:
        gw.stop()


def test_request_stage_sftp_read_only_for_auditors(
    policy_gateway: GatewayProcess, keys: Keys, tmp_path: Path
) -> None:
    """`rm` over sftp is answered with PERMISSION_DENIED and never reaches the server; `get` works."""
    audrey = Client(policy_gateway, keys.stranger, tmp_path / "audrey")
    remote = Path("/home/sgtest") / f"audit-{tmp_path.name[-8:]}.txt"
    remote.write_text("evidence\n")
    try:
        batch = f"get {remote} {tmp_path}/copy.txt\n-rm {remote}\n-rename {remote} {remote}.x\nls {remote}\n"
        result = audrey.sftp("idp:human:audrey@corp.com+app", batch)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "copy.txt").read_text() == "evidence\n"
        assert remote.exists() and not Path(f"{remote}.x").exists()
        # OpenSSH's sftp prints its own words for the status code; the policy's message is in the
        # STATUS packet for clients that show it, and in the audit log.
        assert b"remote delete" in result.stderr and b"Permission denied" in result.stderr, result.stderr
        event = policy_gateway.wait_event("request.blocked", kind="sftp", operation="remove")
        assert event["path"] == str(remote)
        assert event["message"] == f"auditors have read-only sftp (remove {remote} refused)"
    finally:
        remote.unlink(missing_ok=True)
