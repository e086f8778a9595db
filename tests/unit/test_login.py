from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sshgate.login import Login, LoginError, is_name, login_for, parse_login


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("idp:human:alice@corp.com", Login("human", "alice@corp.com")),
        ("idp:human:alice@corp.com+web-1", Login("human", "alice@corp.com", resource="web-1")),
        ("idp:formal:human:john@corp.com@readonly", Login("human", "john@corp.com", "formal", "readonly")),
        (
            "idp:formal:human:john+ops@corp.com@readonly+web-1",
            Login("human", "john+ops@corp.com", "formal", "readonly", "web-1"),
        ),
        ("idp:machine:ci-bot+web-1", Login("machine", "ci-bot", resource="web-1")),
        ("idp:okta:machine:ci-bot@deploy", Login("machine", "ci-bot", "okta", "deploy")),
        ("alice+web-1", Login("alias", "alice", resource="web-1")),
        ("alice", Login("alias", "alice")),
        ("alice@ro", Login("alias", "alice", native_user="ro")),
        ("Alice@ro+db.prod_1", Login("alias", "alice", native_user="ro", resource="db.prod_1")),
        ("idp:human:Alice.Smith@Corp.COM", Login("human", "alice.smith@corp.com")),
        ("idp:human:a@sub.corp.example+x", Login("human", "a@sub.corp.example", resource="x")),
        ("idp:human:john+ops@corp.com", Login("human", "john+ops@corp.com")),
    ],
)
def test_valid_logins(raw: str, expected: Login) -> None:
    assert parse_login(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty login"),
        ("idp:human:alice", "email address"),
        ("idp:human:@corp.com", "email address"),
        ("idp:human:alice@", "domain"),
        ("idp:human:alice@corp.com@", "invalid native user"),
        ("idp:human:alice@corp.com+", "invalid resource"),
        ("idp:human:alice@corp.com@ro@x", "invalid native user"),
        ("idp:human:alice@corp.com+web/1", "invalid resource"),
        ("idp:robot:x", "unknown identity kind"),
        ("idp::human:a@b.c", "identity provider"),
        ("idp:a:b:human:x@y.z", "idp login reads"),
        ("idp:machine:", "machine name"),
        ("idp:machine:-bot", "machine name"),
        ("+web-1", "user alias"),
        ("alice+", "invalid resource"),
        ("alice bob", "control, space"),
        ("alice\x00", "control, space"),
        ("alice\x1b[31m", "control, space"),
        ("alicé", "non-ASCII"),
        ("a" * 257, "longer than 256"),
        ("alice+" + "r" * 64, "invalid resource"),
        ("alice#x", "invalid user alias"),
        ("idp:human:a@b.c#x", "unexpected"),
    ],
)
def test_invalid_logins(raw: str, message: str) -> None:
    with pytest.raises(LoginError, match=message):
        parse_login(raw)


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_login_error(raw: bytes) -> None:
    text = raw.decode("utf-8", "surrogateescape")
    try:
        login = parse_login(text)
    except LoginError:
        return
    assert login.kind in ("human", "machine", "alias")
    assert len(text.encode("utf-8", "surrogateescape")) <= 256


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.+_@:-", max_size=80))
def test_grammar_alphabet_parses_or_raises(text: str) -> None:
    try:
        login = parse_login(text)
    except LoginError:
        return
    for part in (login.resource, login.native_user, login.provider):
        assert part is None or is_name(part)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice", "alice+web-1"),
        ("Alice@ro+api", "alice+web-1"),
        ("idp:human:John+ops@Corp.com@readonly+api", "idp:human:john+ops@corp.com+web-1"),
        ("idp:okta:human:a@b.io", "idp:okta:human:a@b.io+web-1"),
        ("idp:formal:machine:ci-bot@deploy", "idp:formal:machine:ci-bot+web-1"),
    ],
)
def test_login_for_keeps_the_form_and_drops_the_native_user(raw: str, expected: str) -> None:
    assert login_for(parse_login(raw), "web-1") == expected


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.+_@:-", max_size=80),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", fullmatch=True),
)
def test_login_for_names_the_same_identity_and_that_resource(text: str, resource: str) -> None:
    try:
        login = parse_login(text)
    except LoginError:
        return
    again = parse_login(login_for(login, resource))
    assert (again.kind, again.subject, again.provider) == (login.kind, login.subject, login.provider)
    assert (again.native_user, again.resource) == (None, resource)
