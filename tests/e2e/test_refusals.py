"""Refusals: one readable line for the client, the reason in the audit log, the gateway unharmed."""

from __future__ import annotations

import pytest

from tests.support.gateway import Client, GatewayProcess


@pytest.mark.parametrize(
    ("login", "message"),
    [
        ("idp:robot:x", b"unknown identity kind"),
        ("idp:human:alice", b"needs an email address"),
        ("alice+web_1#", b"invalid resource"),
        ("idp:human:alice@corp.com@+web-1", b"invalid native user"),
        ("a" * 300, b"longer than 256 bytes"),
    ],
)
def test_malformed_login(alice: Client, gateway: GatewayProcess, login: str, message: bytes) -> None:
    result = alice.ssh(login, "true")
    assert result.returncode == 255
    assert b"invalid login" in result.stderr and message in result.stderr, result.stderr
    event = gateway.wait_event("login.invalid", login=login[:300])
    assert message.decode() in event["reason"]


def test_unknown_resource(alice: Client, gateway: GatewayProcess) -> None:
    result = alice.ssh("alice", "formal", "nope", "--", "true")
    assert result.returncode == 1
    assert result.stderr == b"sshgate: unknown resource nope; run 'formal list' to see yours\n"
    gateway.wait_event("session.refused", resource="nope")
    plus = alice.ssh("alice+nope", "true")
    assert b"unknown resource nope" in plus.stderr and plus.returncode == 1


def test_no_native_user(alice: Client) -> None:
    result = alice.ssh("alice", "formal", "ops-only", "--", "true")
    assert result.returncode == 1
    assert result.stderr == b"sshgate: no native user for you on ops-only\n"


def test_unknown_native_user(alice: Client) -> None:
    result = alice.ssh("alice", "formal", "web-1", "--native-user", "root", "--", "true")
    assert result.stderr == b"sshgate: no native user root on web-1\n"


def test_wrong_upstream_host_key(alice: Client, gateway: GatewayProcess) -> None:
    result = alice.ssh("alice+wrong-key", "true")
    assert result.returncode == 1
    assert b"presented a host key that does not match its host_key_policy" in result.stderr
    gateway.wait_event("upstream.connect", resource="wrong-key", result="error")


def test_upstream_refuses_native_login(alice: Client) -> None:
    result = alice.ssh("alice+bad-password", "true")
    assert result.returncode == 1
    assert b"refused the login of native user sgro" in result.stderr
    assert b"not-the-password" not in result.stderr


def test_unreachable_upstream(alice: Client) -> None:
    result = alice.ssh("alice", "formal", "down", "--", "true", timeout=20)
    assert result.returncode == 1
    assert result.stderr == b"sshgate: cannot connect to upstream down: Connection refused\n", result.stderr


def test_no_resource_prints_usage_and_exits_2(alice: Client) -> None:
    result = alice.ssh("alice", "uname")
    assert result.returncode == 2
    assert b"formal list" in result.stderr and b"usage: formal <resource>" in result.stderr


def test_formal_list(alice: Client, john: Client) -> None:
    result = alice.ssh("alice", "formal list")
    assert result.returncode == 0
    lines = result.stdout.decode().splitlines()
    assert "web-1\tssh\tsgtest" in lines
    assert not any(line.startswith("ops-only\t") for line in lines)
    john_lines = john.ssh("john", "sshgate", "list").stdout.decode().splitlines()
    assert "ops-only\tssh\tsgro" in john_lines
    assert "web-1\tssh\tsgro" in john_lines


def test_unknown_key_is_denied(gateway: GatewayProcess, keys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    stranger = Client(gateway, keys.stranger, tmp_path)
    result = stranger.ssh("alice+web-1", "true")
    assert result.returncode == 255
    assert b"Permission denied" in result.stderr
