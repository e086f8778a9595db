"""The device grant's state machine, the sign-in admission rules and the binding store."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from sshgate.oidc.bindings import BindingStore, KeyBinding
from sshgate.oidc.device import DevicePoll, Tokens, parse_device_authorization
from sshgate.oidc.errors import SignInError
from sshgate.oidc.idtoken import Person
from sshgate.oidc.signin import admit

AUTH = {
    "device_code": "dc-secret",
    "user_code": "WDJB-MJHT",
    "verification_uri": "https://idp.example.com/device",
    "verification_uri_complete": "https://idp.example.com/device?user_code=WDJB-MJHT",
    "expires_in": 600,
    "interval": 5,
}


def test_device_authorization_is_shown_as_open_url_and_enter_code() -> None:
    auth = parse_device_authorization(AUTH)
    assert auth.instruction() == [
        "Open https://idp.example.com/device and enter WDJB-MJHT",
        "or open https://idp.example.com/device?user_code=WDJB-MJHT",
    ]
    assert "dc-secret" not in repr(auth)
    google = {k: v for k, v in AUTH.items() if not k.startswith("verification_uri")}
    auth = parse_device_authorization({**google, "verification_url": "https://www.google.com/device"})
    assert auth.instruction() == ["Open https://www.google.com/device and enter WDJB-MJHT"]


@pytest.mark.parametrize(
    "change",
    [
        {"verification_uri": "https://idp.example.com/\x1b]0;owned\x07"},
        {"verification_uri": "http://idp.example.com/device"},
        {"user_code": "AB\r\nCD"},
        {"device_code": ""},
        {"expires_in": "soon"},
    ],
)
def test_device_authorization_refusals(change: dict[str, Any]) -> None:
    with pytest.raises(SignInError, match="could not be verified"):
        parse_device_authorization({**AUTH, **change})


def test_polling_follows_rfc_8628() -> None:
    poll = DevicePoll(parse_device_authorization(AUTH), started=100.0, timeout_s=300)
    assert poll.wait(100.0) == 5.0
    assert poll.answer(400, {"error": "authorization_pending"}, 105.0) is None
    assert poll.wait(105.0) == 5.0
    assert poll.answer(400, {"error": "slow_down"}, 110.0) is None
    assert poll.wait(110.0) == 10.0  # slow_down adds 5 s to every later interval
    assert poll.answer(400, {"error": "authorization_pending"}, 120.0) is None
    assert poll.wait(120.0) == 10.0
    tokens = poll.answer(200, {"id_token": "x.y.z", "access_token": "at"}, 130.0)
    assert tokens == Tokens("x.y.z", "at") and "x.y.z" not in repr(tokens)


@pytest.mark.parametrize(
    ("status", "doc", "outcome", "line"),
    [
        (400, {"error": "access_denied"}, "denied", "sign-in denied"),
        (400, {"error": "expired_token"}, "expired", "sign-in code expired"),
        (401, {"error": "invalid_client"}, "unavailable", "sign-in unavailable"),
        (
            200,
            {"access_token": "at"},
            "invalid",
            "sign-in failed: the provider's answer could not be verified",
        ),
    ],
)
def test_polling_verdicts(status: int, doc: dict[str, Any], outcome: str, line: str) -> None:
    poll = DevicePoll(parse_device_authorization(AUTH), started=0.0, timeout_s=300)
    with pytest.raises(SignInError) as caught:
        poll.answer(status, doc, 5.0)
    assert (caught.value.outcome, str(caught.value)) == (outcome, line)


def test_the_sign_in_timeout_ends_polling_before_the_code_expires() -> None:
    poll = DevicePoll(parse_device_authorization(AUTH), started=0.0, timeout_s=12)
    assert poll.answer(400, {"error": "authorization_pending"}, 8.0) is None
    assert poll.wait(10.0) == 2.0  # never sleeps past the deadline
    with pytest.raises(SignInError, match="sign-in code expired"):
        poll.wait(12.0)


def alice(email: str = "alice@corp.com", auth_time: int | None = None) -> Person:
    return Person("sub-1", email, ("eng",), auth_time)


def test_admission() -> None:
    admit(alice(), "alice@corp.com", ["corp.com"], now=1000.0)
    admit(alice(), "alice@corp.com", [], now=1000.0)
    admit(alice(auth_time=900), "alice@corp.com", [], now=1000.0, max_age_s=300)


@pytest.mark.parametrize(
    ("who", "domains", "max_age", "text"),
    [
        (alice("mallory@corp.com"), [], None, "you signed in as mallory@corp.com, not alice@corp.com"),
        (alice("alice@other.com"), ["corp.com"], None, "alice@other.com is outside the allowed domains"),
        (alice(auth_time=None), [], 300, "did not say when you signed in"),
        (alice(auth_time=100), [], 300, "did not ask you to sign in again"),
    ],
)
def test_admission_refusals(who: Person, domains: list[str], max_age: int | None, text: str) -> None:
    with pytest.raises(SignInError) as caught:
        admit(who, "alice@corp.com", domains, now=1000.0, max_age_s=max_age)
    assert caught.value.outcome == "refused" and text in str(caught.value)
    assert str(caught.value).startswith("sign-in refused: ")


def binding(fp: str, email: str = "alice@corp.com", ttl: float = 3600) -> KeyBinding:
    now = time.time()
    return KeyBinding(fp, "okta", email, ("eng",), now, now + ttl)


def test_bindings_persist_privately_and_expire(tmp_path: Path) -> None:
    store = BindingStore(tmp_path / "data")
    store.bind(binding("SHA256:old", ttl=-1))
    store.bind(binding("SHA256:a"))
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.dir).st_mode) == 0o700
    again = BindingStore(tmp_path / "data")  # as after a restart
    found = again.lookup("SHA256:a")
    assert (
        found is not None and found.identity == "idp:okta:human:alice@corp.com" and found.groups == ("eng",)
    )
    assert again.lookup("SHA256:old") is None
    assert "SHA256:old" not in store.path.read_text()  # expired bindings are dropped at the next write
    assert not list(store.dir.glob("*.tmp"))


def test_revocation_reaches_other_readers_at_their_next_lookup(tmp_path: Path) -> None:
    gateway, cli = BindingStore(tmp_path), BindingStore(tmp_path)
    for fp, email in (
        ("SHA256:a", "alice@corp.com"),
        ("SHA256:b", "alice@corp.com"),
        ("SHA256:c", "bob@corp.com"),
    ):
        gateway.bind(binding(fp, email))
    assert gateway.lookup("SHA256:a") is not None
    assert [b.fingerprint for b in cli.revoke(fingerprint="SHA256:a")] == ["SHA256:a"]
    assert gateway.lookup("SHA256:a") is None and gateway.lookup("SHA256:b") is not None
    assert sorted(b.fingerprint for b in cli.revoke(email="Alice@Corp.com")) == ["SHA256:b"]
    assert cli.revoke(fingerprint="SHA256:zzz") == []
    assert [b.fingerprint for b in gateway.bindings()] == ["SHA256:c"]


def test_step_ups_are_shared_and_end_with_revocation(tmp_path: Path) -> None:
    one, two = BindingStore(tmp_path), BindingStore(tmp_path)
    one.record_step_up("okta", "alice@corp.com", 1234.5)
    assert two.step_up_at("okta", "alice@corp.com") == 1234.5
    two.revoke(email="alice@corp.com")
    assert one.step_up_at("okta", "alice@corp.com") is None


def test_an_unreadable_file_binds_nothing(tmp_path: Path) -> None:
    store = BindingStore(tmp_path)
    store.bind(binding("SHA256:a"))
    store.path.write_text("{not json")
    assert store.lookup("SHA256:a") is None


async def test_watch_reports_revocations_within_a_second_but_not_expiry(tmp_path: Path) -> None:
    store = BindingStore(tmp_path)
    store.bind(binding("SHA256:a"))
    store.bind(binding("SHA256:short", ttl=0.3))
    seen: list[set[str]] = []
    stop = asyncio.Event()
    task = asyncio.create_task(store.watch(seen.append, stop))
    await asyncio.sleep(0.5)  # SHA256:short expires meanwhile
    BindingStore(tmp_path).bind(binding("SHA256:b"))  # a write prunes the expired one
    started = time.monotonic()
    BindingStore(tmp_path).revoke(fingerprint="SHA256:a")
    while not seen and time.monotonic() - started < 2:
        await asyncio.sleep(0.02)
    stop.set()
    await task
    assert seen == [{"SHA256:a"}]
    assert time.monotonic() - started < 1.0
