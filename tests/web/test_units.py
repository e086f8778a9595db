"""The web app's pure parts: PKCE, the cookie and CSRF rules, role decisions, SSE encoding."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from sshgate.config import ConfigError, Web, load_config
from sshgate.state.local import LocalState
from sshgate.web.pkce import challenge, new_verifier
from sshgate.web.roles import Principal, identity_email, may_terminate, may_view, owner_filter, role_of
from sshgate.web.signin import safe_next
from sshgate.web.sse import END, OutputEvents
from sshgate.web.store import PendingSignIn, WebStore, cookie_options, csrf_ok, record_key


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
    store = WebStore(shared)
    cookie = await store.open_session(Principal("a@corp.com", ("g",), "admin"))
    principal = await store.session(cookie)
    assert principal is not None and principal.csrf and principal.email == "a@corp.com"
    assert csrf_ok(principal, principal.csrf)
    assert (
        not csrf_ok(principal, None)
        and not csrf_ok(principal, principal.csrf + "x")
        and not csrf_ok(principal, "")
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


async def test_sign_in_state_and_one_time_links_are_single_use(tmp_path: Path) -> None:
    store = WebStore(LocalState(str(tmp_path)))
    state = await store.begin_sign_in(PendingSignIn("verifier", "nonce", "/"))
    assert await store.finish_sign_in(state) == PendingSignIn("verifier", "nonce", "/")
    assert await store.finish_sign_in(state) is None
    token = await store.one_time_link(Principal("demo@example.com", (), "admin"))
    assert await store.use_link(token) is not None and await store.use_link(token) is None


@pytest.mark.parametrize(
    "value",
    [
        "//evil.com/x", "https://evil.com", "/\\evil.com", "", None, "javascript:x",
        "/\t/evil.com", "/\n/evil.com", "/\r\nSet-Cookie: x=1", "/ /evil.com", "/\u3000/evil.com",
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
