"""The catalog's pure parts: summaries of session.json, filters, cursors, ids and names."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import pytest

from sshgate.recording.reader import upgrade
from sshgate.recording.recorder import RecordingError
from sshgate.recording.store import FILE_NAME, LocalFiles, S3Files, check_parts
from sshgate.recording.summary import (
    ChannelSummary,
    CursorError,
    SessionQuery,
    decode_cursor,
    encode_cursor,
    identity_email,
    matches,
    normalized,
    summarize,
)
from tests.support.recordings import Fake, document

UTC = datetime.UTC


def test_summary_of_a_version_2_document() -> None:
    fake = Fake(7)
    summary = summarize(document(fake, ["1-shell.out", "1-shell.timing"]), fake.id)
    assert summary.id == "s-000007" and summary.user == "bob@corp.com"
    assert summary.identity == "idp:google:human:bob@corp.com"
    assert (summary.resource, summary.native_user, summary.status) == ("bastion", "root", "closed")
    assert summary.started == datetime.datetime(2026, 11, 1, 0, 11, 19, tzinfo=UTC)
    assert summary.ended == summary.started + datetime.timedelta(seconds=60)
    assert summary.channels == (ChannelSummary(1, "shell"),)


def test_summary_of_a_version_1_document() -> None:
    doc = upgrade({
        "version": 1, "session_id": "s-old", "status": "closed", "started_at": "2026-11-30T10:00:00Z",
        "ended_at": "2026-11-30T10:05:00Z", "resource": "web-1", "native_user": "ubuntu",
        "user": {"email": "alice@corp.com", "provider": "okta", "type": "human"},
        "client": {"ip": "192.0.2.1"},
        "channels": [{"n": 1, "kind": "shell", "file": "1-shell.cast"}, {"n": 2, "kind": "sftp"}],
    })  # fmt: skip
    summary = summarize(doc, "s-old")
    assert (summary.user, summary.identity, summary.client_ip) == (
        "alice@corp.com", "idp:okta:human:alice@corp.com", "192.0.2.1",
    )  # fmt: skip
    assert summary.channels == (ChannelSummary(1, "shell"),)  # v1 listed only channels with a file
    assert summary.ended == datetime.datetime(2026, 11, 30, 10, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    "change",
    [
        {"id": "s-other"},  # names another session than its directory
        {"started": None},
        {"started": "yesterday"},
        {"ended": "later"},
    ],
)
def test_unusable_documents_are_refused(change: dict[str, object]) -> None:
    fake = Fake(1)
    with pytest.raises(ValueError):
        summarize({**document(fake, []), **change}, fake.id)


def test_odd_fields_become_empty_not_errors() -> None:
    fake = Fake(2)
    doc = {**document(fake, []), "user": None, "resource": 5, "channels": [{"n": "1"}, "x", {"n": 3}]}
    summary = summarize(doc, fake.id)
    assert (summary.user, summary.resource) == ("", "")
    assert summary.channels == (ChannelSummary(3, ""),)


def test_filters_are_exact_and_times_bound_the_start() -> None:
    summary = summarize(document(Fake(7), []), "s-000007")
    started = summary.started
    assert matches(summary, SessionQuery())
    assert matches(summary, SessionQuery(user="bob@corp.com", resource="bastion", native_user="root"))
    assert not matches(summary, SessionQuery(user="bob"))
    assert not matches(summary, SessionQuery(user="BOB@corp.com"))
    assert not matches(summary, SessionQuery(resource="bastion2"))
    assert not matches(summary, SessionQuery(status="active"))
    assert matches(summary, SessionQuery(since=started, until=started + datetime.timedelta(seconds=1)))
    assert not matches(summary, SessionQuery(since=started + datetime.timedelta(seconds=1)))
    assert not matches(summary, SessionQuery(until=started))


def test_empty_texts_are_no_filter_and_naive_times_are_utc() -> None:
    summary = summarize(document(Fake(7), []), "s-000007")
    query = normalized(
        SessionQuery(user="", resource="", q="", cursor="", since=summary.started.replace(tzinfo=None))
    )
    assert (query.user, query.resource, query.q, query.cursor) == (None, None, None, None)
    assert query.since == summary.started and matches(summary, query)
    assert normalized(SessionQuery(owner_email="")).owner_email == ""  # never widened


def test_owner_email_matches_the_identity_whatever_the_provider() -> None:
    google = summarize(document(Fake(7), []), "s-000007")  # idp:google:human:bob@corp.com
    formal = summarize(document(Fake(4), []), "s-000004")  # idp:formal:human:bob@corp.com
    assert matches(google, SessionQuery(owner_email="bob@corp.com"))
    assert matches(formal, SessionQuery(owner_email="Bob@Corp.com"))
    assert not matches(google, SessionQuery(owner_email="alice@corp.com"))
    assert not matches(google, SessionQuery(owner_email="corp.com"))
    assert identity_email("idp:formal:human:a@b:c") == "a@b:c"
    assert identity_email("bob@corp.com") == "" and identity_email("x:y:z:bob@corp.com") == ""
    nameless = summarize({**document(Fake(4), []), "identity": None}, "s-000004")
    assert not matches(nameless, SessionQuery(owner_email=""))


def test_cursor_round_trip_and_forgeries() -> None:
    key = (datetime.datetime(2026, 12, 4, 20, 24, 14, tzinfo=UTC), "s-1")
    cursor = encode_cursor(key)
    assert decode_cursor(cursor) == key
    assert "s-1" not in cursor  # opaque
    for forged in ["", "!!!", base64.urlsafe_b64encode(b"2026-12-04T00:00:00|../etc").decode(),
                   base64.urlsafe_b64encode(b"nonsense|s-1").decode(),
                   base64.urlsafe_b64encode(b"2026-12-04T00:00:00|s-1|x").decode(), "A" * 400]:  # fmt: skip
        with pytest.raises(CursorError):
            decode_cursor(forged)


@pytest.mark.parametrize(
    "session_id", ["..", "../x", "/etc", "a/b", "a\x00b", "%2e%2e", ".hidden", "", "x" * 200, "a b"]
)
def test_ids_that_are_not_session_ids_never_become_paths(session_id: str) -> None:
    with pytest.raises(RecordingError):
        check_parts("2026-12-04", session_id)
    with pytest.raises(RecordingError):
        LocalFiles.session(Path("/tmp"), "2026-12-04", session_id)
    with pytest.raises(RecordingError):
        S3Files(lambda: None, "b", "p/", "2026-12-04", session_id).open("session.json")


@pytest.mark.parametrize("day", ["..", "2026-12-4", "../2026-12-04", "2026-12-04/x"])
def test_days_are_dates(day: str) -> None:
    with pytest.raises(RecordingError):
        check_parts(day, "s-1")


def test_file_names_are_one_plain_component() -> None:
    assert FILE_NAME.fullmatch("1-shell.out") and FILE_NAME.fullmatch("session.json")
    for name in ["../session.json", "/etc/passwd", ".active", "a/b", "a\x00", "", "x\n"]:
        assert not FILE_NAME.fullmatch(name)
