"""The catalog over real recording directories: paging, filters, output search, documents,
verify, casts (also of an active session), and what it refuses to read."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from sshgate.recording.catalog import CursorError, RecordingCatalog, SessionQuery
from sshgate.recording.sources import LocalSource
from tests.support.recordings import Fake, newest_first, write_sessions


def local(root: Path) -> RecordingCatalog:
    return RecordingCatalog([LocalSource(root)])


async def test_pages_newest_first_and_the_cursor_survives_new_sessions(tmp_path: Path) -> None:
    fakes = write_sessions(tmp_path, 120)
    catalog = local(tmp_path)
    first, cursor = await catalog.query(SessionQuery(limit=50))
    assert [s.id for s in first] == [f.id for f in list(newest_first(fakes))[:50]]
    write_sessions(tmp_path, 5, first=120)  # newer sessions arrive between pages
    second, cursor2 = await catalog.query(SessionQuery(limit=50, cursor=cursor))
    third, end = await catalog.query(SessionQuery(limit=50, cursor=cursor2))
    assert [s.id for s in first + second + third] == [f.id for f in newest_first(fakes)]
    assert end is None and len(third) == 20
    fresh, _ = await catalog.query(SessionQuery(limit=5))
    assert [s.id for s in fresh] == [Fake(i).id for i in range(124, 119, -1)]
    with pytest.raises(CursorError):
        await catalog.query(SessionQuery(cursor="bogus"))


async def test_filters(tmp_path: Path) -> None:
    fakes = write_sessions(tmp_path, 200)
    catalog = local(tmp_path)
    query = SessionQuery(user="alice@corp.com", resource="web-1", native_user="ubuntu", limit=500)
    found, _ = await catalog.query(query)
    expected = [f.id for f in newest_first(fakes)
                if (f.user, f.resource, f.native_user) == ("alice@corp.com", "web-1", "ubuntu")]  # fmt: skip
    assert [s.id for s in found] == expected and expected
    active, _ = await catalog.query(SessionQuery(status="active"))
    assert [s.id for s in active] == ["s-000199", "s-000149", "s-000099", "s-000049"]
    since, until = Fake(10).started, Fake(20).started
    window, _ = await catalog.query(SessionQuery(since=since, until=until))
    assert [s.id for s in window] == [Fake(i).id for i in range(19, 9, -1)]
    assert (
        await catalog.query(
            SessionQuery(
                since=until - datetime.timedelta(days=400), until=since - datetime.timedelta(days=300)
            )
        )
    )[0] == []
