"""exec through the gateway: exit codes, signals, stderr, stdin, routing forms, secret forms."""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.support.gateway import Client


def test_formal_exec_exit_status_and_streams(alice: Client) -> None:
    result = alice.ssh("alice", "formal", "web-1", "--", "sh -c 'echo out; echo err >&2; exit 3'")
    assert result.returncode == 3
    assert result.stdout == b"out\n"
    assert result.stderr == b"err\n"


def test_plus_resource_login_passes_exec_verbatim(alice: Client) -> None:
    result = alice.ssh("idp:human:alice@corp.com+web-1", "echo $USER; exit 0")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"sgtest\n"


def test_alias_login(alice: Client) -> None:
    result = alice.ssh("alice+web-1", "id -un")
    assert result.stdout == b"sgtest\n"


def test_killed_by_signal(alice: Client) -> None:
    result = alice.ssh("alice+web-1", "kill -TERM $$", options=["-o", "LogLevel=DEBUG1"])
    # OpenSSH exits 255 on a remote signal; its debug log shows the exit-signal request arrived.
    assert result.returncode == 255
    assert b"rtype exit-signal" in result.stderr, result.stderr[-500:]


def test_stdin_eof_reaches_upstream(alice: Client) -> None:
    result = alice.ssh("alice+web-1", "wc -c", input=b"x" * 1000)
    assert result.stdout.strip() == b"1000"


@pytest.mark.parametrize(
    ("login", "resource", "user"),
    [
        ("alice", "web-1", "sgtest"),  # key via FILE:, default native user
        ("john", "web-1", "sgro"),  # password via ENV:, group assignment
        ("alice", "web-cert", "sgtest"),  # key + certificate JSON
        ("alice", "web-pinned", "sgtest"),  # pinned upstream host key
        ("alice", "web-hostca", "sgtest"),  # upstream host certificate from a trusted host CA
    ],
)
def test_native_secret_forms(alice: Client, john: Client, login: str, resource: str, user: str) -> None:
    client = alice if login == "alice" else john
    result = client.ssh(login, "formal", resource, "--", "id -un")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{user}\n".encode()


def test_native_user_in_login(john: Client) -> None:
    result = john.ssh("idp:human:john@corp.com@sgtest+web-1", "id -un")
    assert result.stdout == b"sgtest\n", result.stderr


def test_machine_identity(gateway, keys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bot = Client(gateway, keys.bot, tmp_path)
    result = bot.ssh("idp:machine:ci-bot+web-1", "echo hi")
    assert result.stdout == b"hi\n", result.stderr


def test_100mb_through_stdin_and_stdout(alice: Client) -> None:
    blob = os.urandom(1 << 20) * 100
    result = alice.ssh("alice+web-1", "cat", input=blob, timeout=120)
    assert result.returncode == 0
    assert len(result.stdout) == len(blob)
    assert hashlib.sha256(result.stdout).hexdigest() == hashlib.sha256(blob).hexdigest()


def test_insecure_host_key_policy_warns_at_every_connect(alice: Client, gateway) -> None:  # type: ignore[no-untyped-def]
    for _ in range(2):
        assert alice.ssh("alice+web-insecure", "true").returncode == 0
    warnings = gateway.events("upstream.insecure_host_key", resource="web-insecure")
    assert len(warnings) >= 2
    assert warnings[-1]["level"] == "warning"
