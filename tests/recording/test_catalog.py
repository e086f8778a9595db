"""The catalog over real recording directories: paging, filters, output search, documents,
verify, casts (also of an active session), and what it refuses to read."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from sshgate.recording.catalog import ChannelSummary, CursorError, NotFound, RecordingCatalog, SessionQuery
from sshgate.recording.channels import Options
from sshgate.recording.local import FileRecorder
from sshgate.recording.recorder import RecordingError
from sshgate.recording.sources import LocalSource
from tests.recording.helpers import META, legacy_session
from tests.recording.test_local import key_file
from tests.support.recordings import Fake, document, newest_first, write_sessions


def parse_cast(data: bytes) -> tuple[dict[str, Any], list[list[Any]]]:
    head, *events = (json.loads(line) for line in data.decode().splitlines())
    return head, events


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


def output_of(fake: Fake) -> bytes | None:
    """Every third session printed something; the word is split by escape sequences in some."""
    if fake.i % 3:
        return None
    return f"$ make\r\nbuilt {fake.i}\r\n\x1b[1mne\x1b[0medle-{fake.i % 2}\r\nprogress 10%\r".encode()


async def test_q_finds_output_text_as_search_does(tmp_path: Path) -> None:
    fakes = write_sessions(tmp_path, 60, output_of)
    catalog = local(tmp_path)
    expected = [f.id for f in newest_first(fakes) if f.i % 3 == 0 and f.i % 2 == 1]
    first, cursor = await catalog.query(SessionQuery(q="needle-1", limit=4))
    rest, end = await catalog.query(SessionQuery(q="needle-1", limit=50, cursor=cursor))
    assert [s.id for s in first + rest] == expected and len(expected) == 10 and end is None
    both, _ = await catalog.query(SessionQuery(q="needle-1", user="alice@corp.com"))
    assert [s.id for s in both] == [i for i in expected if Fake(int(i[2:])).user == "alice@corp.com"]
    assert (await catalog.query(SessionQuery(q="\x1b[1m")))[0] == []  # escape sequences are not text
    assert (await catalog.query(SessionQuery(q="progress 10%")))[0]  # a carriage return ends a line


async def test_owner_email_sees_only_their_sessions(tmp_path: Path) -> None:
    fakes = write_sessions(tmp_path, 30)
    found, _ = await local(tmp_path).query(SessionQuery(owner_email="carol@corp.com", limit=100))
    assert [s.id for s in found] == [f.id for f in newest_first(fakes) if f.user == "carol@corp.com"]
    assert {s.identity.split(":")[1] for s in found} == {"formal", "google"}


async def test_the_index_follows_sessions_that_start_change_and_go(tmp_path: Path) -> None:
    write_sessions(tmp_path, 3)
    catalog = local(tmp_path)
    assert [s.id for s in (await catalog.query(SessionQuery()))[0]] == ["s-000002", "s-000001", "s-000000"]
    recorder = FileRecorder(tmp_path, Options())
    session = await recorder.start_session("s-live", META)
    found, _ = await catalog.query(SessionQuery(limit=1))
    assert (found[0].id, found[0].status, found[0].channels) == ("s-live", "active", ())
    shell = session.open_channel("shell", {"pty": True, "term": "xterm", "size": [80, 24]})
    shell.output(b"hello\r\n")
    await recorder.flush()
    assert (await catalog.query(SessionQuery(limit=1)))[0][0].channels == (ChannelSummary(1, "shell"),)
    shell.close(0)
    await session.close()
    await recorder.aclose()
    live = (await catalog.query(SessionQuery(limit=1)))[0][0]
    assert (live.status, live.ended is not None) == ("closed", True)
    assert await catalog.verify("s-live") == (
        True, "s-live: every file matches its hash; unsigned, so nothing proves who wrote them",
    )  # fmt: skip
    shutil.rmtree(tmp_path / Fake(1).day / "s-000001")
    assert [s.id for s in (await catalog.query(SessionQuery()))[0]] == ["s-live", "s-000002", "s-000000"]


async def test_a_cast_of_an_active_session_is_what_was_flushed(tmp_path: Path) -> None:
    recorder = FileRecorder(tmp_path, Options())
    session = await recorder.start_session("s-act", META)
    shell = session.open_channel("shell", {"pty": True, "term": "xterm", "size": [80, 24]})
    shell.output(b"first caf\xc3")
    shell.output(b"\xa9\r\n")
    shell.resize(100, 30)
    await recorder.flush()
    catalog = local(tmp_path)
    head, events = parse_cast(b"".join([piece async for piece in catalog.cast("s-act", 1)]))
    assert head["width"] == 80 and head["title"] == "alice@corp.com on web-1 as ubuntu"
    assert [e[1:] for e in events] == [["o", "first café\r\n"], ["r", "100x30"]]
    shell.output(b"second\r\n")
    shell.close(0)
    await session.close()
    await recorder.aclose()
    _, events = parse_cast(b"".join([piece async for piece in catalog.cast("s-act", 1)]))
    assert "".join(e[2] for e in events if e[1] == "o") == "first café\r\nsecond\r\n"


async def test_a_cast_of_a_half_written_timing_log_stops_at_the_last_whole_line(tmp_path: Path) -> None:
    (fake,) = write_sessions(tmp_path, 1, lambda f: b"abc\r\n")
    directory = tmp_path / fake.day / fake.id
    with (directory / "1-shell.timing").open("ab") as f:
        f.write(b"O 0.1")  # the recorder is mid-write
    _, events = parse_cast(b"".join([p async for p in local(tmp_path).cast(fake.id, 1)]))
    assert [e[1:] for e in events] == [["o", "abc\r\n"]]


async def test_old_cast_recordings_are_listed_and_cast_as_they_are(tmp_path: Path) -> None:
    directory = legacy_session(tmp_path, key_file(tmp_path))
    catalog = local(tmp_path)
    (summary,), _ = await catalog.query(SessionQuery())
    assert (summary.id, summary.user, summary.channels) == (
        "s-legacy",
        "alice@corp.com",
        (ChannelSummary(1, "shell"),),
    )
    cast = b"".join([piece async for piece in catalog.cast("s-legacy", 1)])
    assert cast == (directory / "1-shell.cast").read_bytes()
    doc = await catalog.document("s-legacy")
    assert doc is not None and doc["identity"] == "idp:formal:human:alice@corp.com" and doc["version"] == 1
    ok, detail = await catalog.verify("s-legacy")
    assert ok and "the signature matches the key carried in the manifest" in detail
    assert (await catalog.query(SessionQuery(q="legacy-word")))[0] == [summary]


async def test_unknown_ids_channels_and_non_terminal_channels(tmp_path: Path) -> None:
    recorder = FileRecorder(tmp_path, Options())
    session = await recorder.start_session("s-mix", META)
    session.open_channel("sftp", {}).close()
    await session.close()
    await recorder.aclose()
    catalog = local(tmp_path)
    for bad in ["nope", "../s-mix", "s-mix/..", "/etc/passwd", "s-mix\x00", "%2e%2e%2fs-mix", ""]:
        assert await catalog.document(bad) is None
        assert (await catalog.verify(bad))[0] is False
        with pytest.raises(NotFound):
            await anext(catalog.cast(bad, 1))
    for channel in (1, 2):  # an sftp channel, and none
        with pytest.raises(NotFound):
            await anext(catalog.cast("s-mix", channel))


async def test_nothing_outside_the_recordings_directory_is_read(tmp_path: Path) -> None:
    root, outside = tmp_path / "recordings", tmp_path / "outside"
    (fake,) = write_sessions(root, 1, lambda f: b"inside\r\n")
    (victim,) = write_sessions(outside, 1, lambda f: b"secret\r\n", first=5)
    day = root / fake.day
    (day / "s-link").symlink_to(outside / victim.day / victim.id)  # a session dir that is a symlink
    (root / "2026-01-01").symlink_to(outside / victim.day)  # a day dir that is a symlink
    directory = day / fake.id
    (directory / "1-shell.out").unlink()
    (directory / "1-shell.out").symlink_to(outside / victim.day / victim.id / "1-shell.out")
    os.mkfifo(directory / "1-shell.timing.fifo")
    catalog = local(root)
    assert [s.id for s in (await catalog.query(SessionQuery()))[0]] == [fake.id]
    assert await catalog.document("s-link") is None and await catalog.document(victim.id) is None
    got = []
    with pytest.raises(RecordingError, match=r"1-shell\.out: Too many levels of symbolic links"):
        async for piece in catalog.cast(fake.id, 1):  # the symlinked .out is refused
            got.append(piece)
    assert b"secret" not in b"".join(got)
    ok, detail = await catalog.verify(fake.id)
    assert (
        not ok and "1-shell.out: changed" in detail and "1-shell.timing.fifo: not in the manifest" in detail
    )
    doc = await catalog.document(fake.id)
    assert doc is not None
    doc["channels"][0]["kind"] = "../../outside"  # a tampered document names files elsewhere
    (directory / "session.json").write_text(json.dumps(doc))
    with pytest.raises(RecordingError):
        await anext(catalog.cast(fake.id, 1))


async def test_malformed_documents_are_skipped_with_a_log_line(tmp_path: Path) -> None:
    write_sessions(tmp_path, 3)
    for i, content in [(0, b"{not json"), (1, b"[1, 2]")]:
        (tmp_path / Fake(i).day / Fake(i).id / "session.json").write_bytes(content)
    odd = tmp_path / Fake(2).day / "s-odd"
    odd.mkdir()
    (odd / "session.json").write_text(json.dumps({**document(Fake(2), []), "id": "s-000002"}))
    (tmp_path / Fake(2).day / "s-empty").mkdir()  # being created: no session.json yet
    (tmp_path / "not-a-day").mkdir()
    with capture_logs() as logs:
        found, _ = await local(tmp_path).query(SessionQuery())
    assert [s.id for s in found] == ["s-000002"]
    skipped = sorted(Path(e["session"]).name for e in logs if e["event"] == "recording.unreadable")
    assert skipped == ["s-000000", "s-000001", "s-odd"]


async def test_a_large_cast_streams_in_flat_memory(tmp_path: Path) -> None:
    chunk = (b"0123456789abcdef" * 4095 + b"\r\n\x1b[1m\xc3") + b"\xa9"  # escapes and split characters
    (fake,) = write_sessions(tmp_path, 1, lambda f: b"")
    directory = tmp_path / fake.day / fake.id
    with (directory / "1-shell.out").open("ab") as out, (directory / "1-shell.timing").open("ab") as log:
        for _ in range(512):  # 32 MiB
            out.write(chunk)
            log.write(b"O 0.000001 %d\n" % len(chunk))
    catalog = local(tmp_path)
    tracemalloc.start()
    try:
        total, batches = 0, 0
        async for batch in catalog.cast(fake.id, 1):
            total, batches = total + len(batch), batches + 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total > 32 << 20 and batches > 100
    assert peak < 8 << 20, peak


async def test_a_reader_that_stops_early_closes_the_files(tmp_path: Path) -> None:
    (fake,) = write_sessions(tmp_path, 1, lambda f: b"x" * (4 << 20))
    catalog = local(tmp_path)
    before = len(os.listdir("/proc/self/fd"))
    stream = catalog.cast(fake.id, 1)
    assert await anext(stream)
    await stream.aclose()
    for _ in range(100):
        if len(os.listdir("/proc/self/fd")) <= before:
            break
        await asyncio.sleep(0.02)
    assert len(os.listdir("/proc/self/fd")) <= before


async def test_the_updated_index_equals_one_built_afresh(tmp_path: Path) -> None:
    """300 sessions (sorted whole), then rounds of a few starting, ending and going (updated in place)."""
    write_sessions(tmp_path, 300)
    catalog = local(tmp_path)
    assert len((await catalog.query(SessionQuery(limit=500)))[0]) == 300
    for round_ in range(3):
        write_sessions(tmp_path, 2, first=300 + 2 * round_)
        gone = Fake(10 * round_ + 5)
        shutil.rmtree(tmp_path / gone.day / gone.id)
        changed = Fake(49 + 50 * round_)  # an active one ends
        path = tmp_path / changed.day / changed.id / "session.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "status": "closed"}))
        updated, _ = await catalog.query(SessionQuery(limit=500))
        fresh, _ = await local(tmp_path).query(SessionQuery(limit=500))
        assert updated == fresh and len(fresh) == 300 + round_ + 1
        assert next(s for s in updated if s.id == changed.id).status == "closed"
