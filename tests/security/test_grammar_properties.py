"""Property tests of the two grammars a client controls before anything else is checked: the login
(SSH user name) and the ``formal`` command. Only the module's documented error may escape; what
is accepted matches the grammar and reads back the same."""

from __future__ import annotations

import re
import shlex

from hypothesis import given, settings
from hypothesis import strategies as st

from sshgate.command import CommandError, ListResources, Route, parse_command
from sshgate.login import GLOB_CHARACTERS, MAX_LOGIN_BYTES, Login, LoginError, is_name, parse_login

BOUNDED = settings(max_examples=200, deadline=None)  # about a second each

# The grammar as the spec writes it, independently of login.py's own expressions.
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+"
_SUFFIX = rf"(@{_NAME})?(\+{_NAME})?"
LOGIN_GRAMMAR = re.compile(
    rf"idp:({_NAME}:)?(human:{_EMAIL}|machine:{_NAME}){_SUFFIX}|{_NAME}{_SUFFIX}", re.ASCII
)

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
names = st.builds(str.__add__, st.sampled_from(_ALNUM), st.text(_ALNUM + "._-", max_size=20))
labels = st.builds(str.__add__, st.sampled_from(_ALNUM), st.text(_ALNUM, max_size=8))
emails = st.builds(
    lambda local, domain: f"{local}@{'.'.join(domain)}",
    st.text(_ALNUM + "._%+-", min_size=1, max_size=20),
    st.lists(labels, min_size=1, max_size=3),
)


def _render(login: Login) -> str:
    """A login written back from its parts (subject lower-cased, as parsed)."""
    tail = (f"@{login.native_user}" if login.native_user else "") + (
        f"+{login.resource}" if login.resource else ""
    )
    if login.kind == "alias":
        return login.subject + tail
    return "idp:" + (f"{login.provider}:" if login.provider else "") + f"{login.kind}:{login.subject}{tail}"


@st.composite
def valid_logins(draw: st.DrawFn) -> tuple[str, Login]:
    kind = draw(st.sampled_from(["human", "machine", "alias"]))
    provider = draw(st.none() | names) if kind != "alias" else None
    subject = draw(emails if kind == "human" else names)
    native, resource = draw(st.none() | names), draw(st.none() | names)
    login = Login(kind, subject.lower() if kind != "machine" else subject, provider, native, resource)
    raw = _render(Login(kind, subject, provider, native, resource))
    return raw, login


def _accepted(raw: str) -> Login | None:
    try:
        return parse_login(raw)
    except LoginError:
        return None


@BOUNDED
@given(
    st.one_of(st.text(max_size=300), st.text(alphabet="idp:human@machine+.-_abcXYZ019*?[!,%", max_size=80))
)
def test_any_login_parses_or_raises_login_error(raw: str) -> None:
    login = _accepted(raw)
    if login is None:
        return
    assert LOGIN_GRAMMAR.fullmatch(raw), raw
    assert len(raw.encode()) <= MAX_LOGIN_BYTES and not any(c in GLOB_CHARACTERS for c in raw)
    for part in (login.provider, login.native_user, login.resource):
        assert part is None or is_name(part)
    assert _render(login).lower() == raw.lower()
    assert parse_login(_render(login)) == login


@BOUNDED
@given(valid_logins())
def test_grammar_logins_are_accepted_as_written(case: tuple[str, Login]) -> None:
    raw, expected = case
    if len(raw) > MAX_LOGIN_BYTES:
        return
    assert parse_login(raw) == expected


@BOUNDED
@given(valid_logins(), st.sampled_from(GLOB_CHARACTERS), st.integers(min_value=0))
def test_a_pattern_character_anywhere_is_refused(case: tuple[str, Login], glob: str, at: int) -> None:
    raw, _ = case
    at %= len(raw) + 1
    try:
        parse_login(raw[:at] + glob + raw[at:])
    except LoginError as exc:
        assert "pattern character" in str(exc) or "longer than" in str(exc)
    else:
        raise AssertionError(f"accepted {raw[:at] + glob + raw[at:]!r}")


@BOUNDED
@given(valid_logins(), st.sampled_from(["\x00", "\n", "\r", "\t", " ", "\x1b", "\x7f", "\u00e9", "\uff41"]))
def test_a_control_or_foreign_character_anywhere_is_refused(case: tuple[str, Login], bad: str) -> None:
    raw, _ = case
    for at in (0, len(raw) // 2, len(raw)):
        try:
            parse_login(raw[:at] + bad + raw[at:])
        except LoginError:
            continue
        raise AssertionError(f"accepted {raw[:at] + bad + raw[at:]!r}")


@BOUNDED
@given(
    st.one_of(st.text(max_size=200), st.text(alphabet="formal sshgate list -- '\"\\ web-1 =x", max_size=60))
)
def test_any_command_parses_or_raises_command_error(text: str) -> None:
    try:
        parsed = parse_command(text)
    except CommandError:
        return
    if isinstance(parsed, Route):
        assert is_name(parsed.resource)
        assert parsed.native_user is None or is_name(parsed.native_user)
        assert parsed.command is None or parsed.command.strip() == parsed.command != ""
    else:
        assert parsed is None or isinstance(parsed, ListResources)


# A lone "--" is the separator wherever it stands, quoted or not (a shell removes the quotes too).
# No NUL: a command holding one is refused whole (test_command.py).
option_values = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=30
).filter(lambda v: v != "--")
words = st.lists(st.text(_ALNUM + "_./=-", min_size=1, max_size=12), min_size=1, max_size=5)


@BOUNDED
@given(
    names,
    st.none() | names,
    st.none() | option_values,
    st.none() | option_values,
    st.none() | words,
)
def test_a_written_command_reads_back(
    resource: str, native: str | None, shell: str | None, container: str | None, command: list[str] | None
) -> None:
    parts = ["formal", resource]
    for option, value in (("--native-user", native), ("--shell", shell), ("--container", container)):
        if value is not None:
            parts += [option, value]
    text = shlex.join(parts) + (" -- " + " ".join(command) if command else "")
    assert parse_command(text) == Route(
        resource, native, shell, container, None, " ".join(command) if command else None
    )
