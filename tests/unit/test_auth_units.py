"""Pure pieces of authentication and routing: tokens, lockout, native users, secrets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from sshgate.config import NativeUser
from sshgate.gateway.lockout import FailureTracker
from sshgate.identity import Identity
from sshgate.native_secret import AmbientIam, AssumeRole, Password, PrivateKey, SecretError, parse_secret
from sshgate.native_users import NoNativeUser, resolve_native_user
from sshgate.tokens import hash_token, is_token_hash, new_token, verify_token


def test_token_round_trip() -> None:
    token, hashed = new_token()
    assert is_token_hash(hashed) and token not in hashed
    assert verify_token(token, ["garbage", hashed])
    assert not verify_token(token + "x", [hashed])
    assert not verify_token(token, [])
    assert hash_token(token, salt=b"s" * 16) == hash_token(token, salt=b"s" * 16)


def test_every_login_costs_as_many_scrypt_runs_as_the_most_tokens_anyone_has(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Else the time tells an identity with two tokens (two runs) from an unknown login (one)."""
    token, hashed = new_token()
    _, other = new_token()
    real, runs = hashlib.scrypt, []

    def counted(*args: Any, **kwargs: Any) -> bytes:
        runs.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counted)
    for hashes in ([], [hashed], [hashed, other], ["garbage"]):
        runs.clear()
        verify_token(token, hashes, runs=2)
        assert len(runs) == 2, hashes
    assert verify_token(token, [other, hashed], runs=2) and not verify_token(token, [other], runs=2)


def test_lockout_counts_and_expires() -> None:
    now = [0.0]
    tracker = FailureTracker(3, 60, clock=lambda: now[0])
    assert not tracker.failure("1.2.3.4") and not tracker.failure("1.2.3.4")
    assert tracker.locked_for("1.2.3.4") == 0
    assert tracker.failure("1.2.3.4")
    assert tracker.locked_for("1.2.3.4") == 60
    assert tracker.locked_for("5.6.7.8") == 0
    now[0] = 61
    assert tracker.locked_for("1.2.3.4") == 0


def test_lockout_forgets_failures_after_the_window_only() -> None:
    now = [0.0]
    tracker = FailureTracker(3, 60, clock=lambda: now[0])
    tracker.failure("9.9.9.9")
    tracker.failure("9.9.9.9")
    now[0] = 61  # the run started more than lockout_s ago: it starts over
    assert not tracker.failure("9.9.9.9") and not tracker.failure("9.9.9.9")
    now[0] = 100
    assert tracker.failure("9.9.9.9")


NATIVES = [
    NativeUser(username="ubuntu", secret="x", default=True),
    NativeUser(username="readonly", secret="x", users=["alice@corp.com"]),
    NativeUser(username="deploy", secret="x", groups=["ops"]),
]


@pytest.mark.parametrize(
    ("identity", "requested", "expected"),
    [
        (Identity("human", "alice@corp.com", "formal", None, ("ops",)), None, ("readonly", "user")),
        (Identity("human", "bob@corp.com", "formal", None, ("ops",)), None, ("deploy", "group")),
        (Identity("human", "carol@corp.com", "formal", None, ()), None, ("ubuntu", "default")),
        (Identity("machine", "ci-bot", "formal", None, ()), "deploy", ("deploy", "explicit")),
    ],
)
def test_native_user_resolution_order(
    identity: Identity, requested: str | None, expected: tuple[str, str]
) -> None:
    choice = resolve_native_user("web-1", NATIVES, identity, requested)
    assert (choice.user.username, choice.source) == expected


def test_native_user_refusals() -> None:
    nobody = Identity("human", "x@y.z", "formal", None)
    with pytest.raises(NoNativeUser, match="no native user root on web-1"):
        resolve_native_user("web-1", NATIVES, nobody, "root")
    with pytest.raises(NoNativeUser, match="no native user for you on web-1"):
        resolve_native_user("web-1", NATIVES[1:], nobody, None)


def test_secret_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    pem = key.export_private_key().decode()
    monkeypatch.setenv("SG_PW", "s3cret")
    (tmp_path / "key").write_text(pem)
    (tmp_path / "pw").write_text("filepw\n")
    assert parse_secret("ENV:SG_PW") == Password("s3cret")
    assert parse_secret(f"FILE:{tmp_path / 'pw'}") == Password("filepw")
    assert parse_secret("plain") == Password("plain")
    loaded = parse_secret(f"FILE:{tmp_path / 'key'}")
    assert isinstance(loaded, PrivateKey) and loaded.key.public_data == key.public_data
    assert parse_secret("iam") == AmbientIam()
    assert parse_secret("arn:aws:iam::123456789012:role/x") == AssumeRole("arn:aws:iam::123456789012:role/x")
    ca = asyncssh.generate_private_key("ssh-ed25519")
    cert = ca.generate_user_certificate(key, "id", principals=["u"])
    combo = json.dumps({"key": pem, "cert": cert.export_certificate().decode()})
    both = parse_secret(combo)
    assert isinstance(both, PrivateKey) and both.certificate is not None


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("ENV:SG_MISSING_VAR", "environment variable SG_MISSING_VAR is not set"),
        ("FILE:/nonexistent/x", "cannot read secret file /nonexistent/x"),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n-----END OPENSSH PRIVATE KEY-----",
            "usable private key",
        ),
        ('{"key": "x"}', r"key\+certificate secret"),
        ("{not json", "does not parse"),
    ],
)
def test_secret_errors_never_echo_the_secret(secret: str, message: str) -> None:
    with pytest.raises(SecretError, match=message) as info:
        parse_secret(secret)
    assert "not a key" not in str(info.value)
