"""The web app's pure parts: PKCE, the cookie and CSRF rules, role decisions, SSE encoding."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

import pytest

from sshgate.config import ConfigError, Web, load_config
from sshgate.state.local import LocalState
from sshgate.state.seal import Sealer
from sshgate.web.pkce import challenge, new_verifier
from sshgate.web.roles import Principal, identity_email, may_terminate, may_view, owner_filter, role_of
from sshgate.web.signin import MAX_NEXT_CHARS, safe_next
from sshgate.web.sse import END, OutputEvents
from sshgate.web.store import (
    MAX_STATE_CHARS,
    SIGN_IN_TTL_S,
    PendingSignIn,
    WebStore,
    cookie_options,
    csrf_ok,
    record_key,
)

SEALER = Sealer("a-web-test-key-of-32-characters-or-more")


def test_pkce_s256_matches_rfc7636_appendix_b() -> None:
    assert (
        challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )
    verifier = new_verifier()
    assert 43 <= len(verifier) <= 128 and verifier != new_verifier()
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert challenge(verifier) == digest


def test_roles_from_groups() -> None:
    assert role_of(["security-admins", "security"], ["security"], ["security-admins"]) == "admin"
    assert role_of(["security"], ["security"], ["security-admins"]) == "viewer"
    assert role_of(["dev"], ["security"], ["security-admins"]) == "user"
    assert role_of([], [], []) == "user"


def test_a_user_sees_only_sessions_of_their_own_identity_whichever_provider() -> None:
    alice = Principal("alice@corp.com", (), "user")
    assert may_view(alice, {"identity": "idp:okta:human:alice@corp.com"})
    assert may_view(alice, {"identity": "idp:formal:human:Alice@Corp.com"})
    assert not may_view(alice, {"identity": "idp:formal:human:bob@corp.com"})
    assert not may_view(alice, {"identity": "idp:formal:machine:alice@corp.com"})
    assert not may_view(alice, {"identity": None, "user": "alice@corp.com"})
    assert owner_filter(alice) == "alice@corp.com" and not may_terminate(alice)
    viewer, admin = Principal("v@corp.com", (), "viewer"), Principal("a@corp.com", (), "admin")
    assert may_view(viewer, {"identity": "idp:formal:human:bob@corp.com"}) and owner_filter(viewer) is None
    assert not may_terminate(viewer) and may_terminate(admin)
    assert identity_email("idp:x:human:no-at-sign") is None


async def test_cookie_sessions_carry_a_csrf_token_checked_exactly(tmp_path: Path) -> None:
    shared = LocalState(str(tmp_path))
    store = WebStore(shared, SEALER)
    cookie = await store.open_session(Principal("a@corp.com", ("g",), "admin"))
    principal = await store.session(cookie)
    assert principal is not None and principal.csrf and principal.email == "a@corp.com"
    assert csrf_ok(principal, principal.csrf)
    assert (
        not csrf_ok(principal, None)
        and not csrf_ok(principal, principal.csrf + "x")
        and not csrf_ok(principal, "")
        and not csrf_ok(principal, "é" + principal.csrf)  # non-ASCII from a hostile header: no, not a 500
    )
    assert not csrf_ok(Principal("b@corp.com", (), "admin"), "anything")  # bearer: no cookie, no token
    assert await store.session(cookie + "x") is None
    assert await shared.get_record("session", cookie) is None  # kept under its hash only
    assert (await shared.get_record("session", record_key(cookie)) or {}).get("email") == "a@corp.com"
    await store.close_session(cookie)
    assert await store.session(cookie) is None
    options = cookie_options(secure=True)
    assert options["httponly"] and options["samesite"] == "Lax" and options["secure"]
    assert not cookie_options(secure=False)["secure"]


async def test_a_sign_in_lives_in_its_sealed_state_and_is_used_once(tmp_path: Path) -> None:
    now = [time.time()]  # the marks expire by the real clock
    shared = LocalState(str(tmp_path))
    store = WebStore(shared, SEALER, clock=lambda: now[0])
    pending = PendingSignIn("the-verifier", "the-nonce", "/sessions/x", record_key("the-cookie"))
    states = [store.begin_sign_in(pending) for _ in range(1000)]
    assert shared.records.get("signin", record_key(states[0])) is None  # starting stores nothing
    assert all(len(s) < MAX_STATE_CHARS for s in states) and len(set(states)) == 1000
    assert all("the-verifier" not in s and "the-nonce" not in s for s in states)  # sealed, not encoded
    assert store.open_sign_in(states[0]) == (pending, now[0] + SIGN_IN_TTL_S)
    assert not await store.sign_in_used(states[0])
    assert await store.use_sign_in(states[0], now[0] + SIGN_IN_TTL_S)
    assert await store.sign_in_used(states[0]) and not await store.use_sign_in(states[0], now[0] + 600)
    assert not await store.sign_in_used(states[1])
    now[0] += SIGN_IN_TTL_S
    assert store.open_sign_in(states[1]) is None  # expired


def test_a_state_not_sealed_by_this_key_or_altered_opens_to_nothing() -> None:
    store = WebStore(LocalState("/nonexistent"), SEALER)
    state = store.begin_sign_in(PendingSignIn("v", "n", "/", "b"))
    other = WebStore(LocalState("/nonexistent"), Sealer("another-key-of-32-characters-or-more!"))
    flipped = state[:20] + ("A" if state[20] != "A" else "B") + state[21:]
    for bad in (flipped, state[:-2], "", "!!not base64!!", "x" * (MAX_STATE_CHARS + 1), other.begin_sign_in(
        PendingSignIn("v", "n", "/", "b"))):  # fmt: skip
        assert store.open_sign_in(bad) is None
    # A session record's sealed value is no sign-in either (another context)
    assert store.open_sign_in(SEALER.seal_private("web:session:x", {"v": "v", "n": "n", "x": "/", "e": 2e9}).hex()) is None


async def test_one_time_links_are_single_use(tmp_path: Path) -> None:
    store = WebStore(LocalState(str(tmp_path)), SEALER)
    token = await store.one_time_link(Principal("demo@example.com", (), "admin"))
    assert await store.use_link(token) is not None and await store.use_link(token) is None


@pytest.mark.parametrize(
    "value",
    [
        "//evil.com/x", "https://evil.com", "/\\evil.com", "", None, "javascript:x",
        "/\t/evil.com", "/\n/evil.com", "/\r\nSet-Cookie: x=1", "/ /evil.com", "/\u3000/evil.com",
        "/" + "a" * MAX_NEXT_CHARS,
    ],
)  # fmt: skip
def test_after_sign_in_only_paths_on_this_site(value: str | None) -> None:
    assert safe_next(value) == "/"


def test_after_sign_in_a_path_on_this_site_is_kept() -> None:
    assert safe_next("/sessions/0123456789abcdef0123456789abcdef?tab=live") == (
        "/sessions/0123456789abcdef0123456789abcdef?tab=live"
    )


def test_sse_events_are_asciicast_output_and_split_utf8_survives() -> None:
    events = OutputEvents()
    snowman = "☃".encode()
    assert events.event(0.5, b"hi\n" + snowman[:1]) == b'data: [0.5,"o","hi\\n"]\n\n'
    second = events.event(0.75, snowman[1:] + b"\x1b[0m")
    assert second.startswith(b"data: ") and second.endswith(b"\n\n") and second.count(b"\n") == 2
    assert json.loads(second[6:]) == [0.75, "o", "☃\x1b[0m"]
    assert events.event(1.0, b"") == b""
    assert END == b"event: end\ndata: {}\n\n"


def test_web_config_is_validated(tmp_path: Path) -> None:
    web = Web(listen="127.0.0.1:8443", public_url="https://sshgate.corp.com/")
    assert web.public_url == "https://sshgate.corp.com" and web.tls is None
    for bad in ({"listen": "8443", "public_url": "https://x"}, {"listen": "h:1", "public_url": "ftp://x"},
                {"listen": "h:1", "public_url": "https://x/path?q"}):  # fmt: skip
        with pytest.raises(ValueError):
            Web(**bad)
    path = tmp_path / "sshgate.yaml"
    path.write_text("web: {listen: '127.0.0.1:1', public_url: 'https://x', viewers: [a]}\n")
    with pytest.raises(ConfigError, match="viewers"):
        load_config(path)
