"""The pure pieces of recording: the timing log codec, the scp follower, the search's cleaning."""

from __future__ import annotations

import codecs
import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sshgate.recording import timing
from sshgate.recording.asciicast import _json_string
from sshgate.recording.scp import ScpTracker
from sshgate.recording.search import LineMatcher, plain


def test_timing_lines_read_back() -> None:
    log = b"".join([
        timing.header("START_TIME", "2026-12-04 20:24:14+00:00"),
        timing.header("COMMAND", "printf 'a\\nb'\nrm -rf /"),
        timing.data("O", 0.25, 12),
        timing.data("I", -0.001, 3),  # a clock that went back reads as no delay
        timing.resize(1.5, 120, 40),
        timing.stderr(0.000001, 7),
    ])  # fmt: skip
    assert log.count(b"\n") == 6  # one line each, whatever a value holds
    steps = list(timing.parse(io.BytesIO(log)))
    assert [(s.kind, s.name) for s in steps] == [("H", "START_TIME"), ("H", "COMMAND"), ("O", ""), ("I", ""),
                                                ("S", "SIGWINCH"), ("S", "STDERR")]  # fmt: skip
    assert steps[1].value == "printf 'a\\x5cnb'\\x0arm -rf /"
    assert (steps[2].at, steps[2].size, steps[3].at, steps[3].size) == (0.25, 12, 0.25, 3)
    assert (steps[4].at, steps[4].cols, steps[4].rows) == (1.75, 120, 40)
    assert steps[5].size == 7 and steps[5].at == pytest.approx(1.750001)


@pytest.mark.parametrize(
    "line", [b"O x 12\n", b"O 0.1 -3\n", b"Q 0.1 3\n", b"S 0.1 SIGWINCH ROWS=a COLS=1\n", b"\n"]
)
def test_malformed_timing_lines_are_timing_errors(line: bytes) -> None:
    with pytest.raises(timing.TimingError, match="line 1"):
        list(timing.parse(io.BytesIO(line)))


def follow(direction: str, source: list[bytes], sink: list[bytes]) -> list[dict[str, Any]]:
    """Feed the two sides alternately, as scp's lockstep makes them arrive."""
    events: list[dict[str, Any]] = []
    tracker = ScpTracker(direction, events.append)
    for i in range(max(len(source), len(sink))):
        if direction == "download" and i < len(sink):
            tracker.sink_data(sink[i])
        if i < len(source):
            tracker.source_data(source[i])
        if direction == "upload" and i < len(sink):
            tracker.sink_data(sink[i])
    return events


def test_scp_upload_of_a_tree_with_a_refused_file() -> None:
    source = [b"D0755 0 dir\n", b"C0644 5 a.txt\n", b"hello\x00", b"C0600 3 b.bin\n", b"E\n",
              b"T1 0 2 0\n", b"C0644 2 top\n", b"hi\x00"]  # fmt: skip
    sink = [b"\x00", b"\x00", b"\x00", b"\x01scp: dir/b.bin: Permission denied\n", b"\x00", b"\x00", b"\x00",
            b"\x00"]  # fmt: skip
    events = follow("upload", source, sink)
    assert [(e["file"], e["bytes"], e["status"]) for e in events] == [
        ("dir/a.txt", 5, "ok"), ("dir/b.bin", 3, "error"), ("top", 2, "ok"),
    ]  # fmt: skip
    assert events[1]["message"] == "scp: dir/b.bin: Permission denied" and events[0]["direction"] == "upload"


def test_scp_download_and_a_missing_file() -> None:
    events = follow(
        "download",
        [b"C0644 4 f\n", b"data\x00", b"\x01scp: /nope: No such file\n"],
        [b"\x00", b"\x00", b"\x00"],
    )
    assert [(e["op"], e.get("file"), e["status"]) for e in events] == [
        ("file", "f", "ok"),
        ("error", None, "error"),
    ]
    assert events[1]["message"] == "scp: /nope: No such file"


def test_scp_that_is_not_scp_stops_being_followed() -> None:
    events = follow("upload", [b"x" * 5000], [])
    assert [e["op"] for e in events] == ["untracked"]
    events = follow("upload", [b"GET / HTTP/1.1\n", b"C0644 1 f\n"], [b"\x00"])
    assert [e["op"] for e in events] == ["untracked"]  # and nothing after
    # A size in digits that are not ASCII (superscript two: str.isdigit() says yes, int() says no).
    events = follow("upload", [b"C0644 \xc2\xb2 f\n"], [b"\x00"])
    assert [e["op"] for e in events] == ["untracked"]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_scp_events_do_not_depend_on_how_bytes_are_cut(data: st.DataObject) -> None:
    # Each unit is answered before the next is sent (scp's lockstep); within a unit, any cuts.
    units = [
        b"D0755 0 d\n",
        b"C0644 70000 big\n",
        b"\x07" * 70000 + b"\x00",
        b"E\n",
        b"C0644 0 empty\n",
        b"\x00",
    ]
    events: list[dict[str, Any]] = []
    tracker = ScpTracker("upload", events.append)
    for unit in units:
        cuts = sorted(data.draw(st.lists(st.integers(0, len(unit)), max_size=5)))
        for a, b in zip([0, *cuts], [*cuts, len(unit)], strict=True):
            tracker.source_data(unit[a:b])
        tracker.sink_data(b"\x00")
    assert [(e["file"], e["bytes"], e["status"]) for e in events] == [
        ("d/big", 70000, "ok"),
        ("empty", 0, "ok"),
    ]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300), st.sampled_from(["upload", "download"]))
def test_scp_follower_takes_any_bytes(source: bytes, sink: bytes, direction: str) -> None:
    events: list[dict[str, Any]] = []
    tracker = ScpTracker(direction, events.append)
    for i in range(0, max(len(source), len(sink)), 7):
        tracker.source_data(source[i : i + 7])
        tracker.sink_data(sink[i : i + 7])
    assert all(e["op"] in ("file", "error", "untracked") for e in events)


def test_plain_text_without_escape_sequences() -> None:
    line = "\x1b]0;title\x07\x1b[01;34mbin\x1b[0m\tok\x1b(B \x1bP1$r\x1b\\done\x07\x00"
    assert plain(line) == "bin\tok done"


def test_line_matcher_cuts_lines_and_finds_coloured_words() -> None:
    matcher = LineMatcher("needle")
    assert matcher.feed("hay nee") == []
    assert matcher.feed("dle hay\r\nmore n\x1b[1me\x1b[0medle\rother") == ["hay needle hay", "more needle"]
    assert matcher.end() == []
    long = LineMatcher("x")
    assert long.feed("y" * 200_000 + "x") == []  # no newline: cut every 64 Ki characters
    (shown,) = long.end()
    assert shown.startswith("…") and shown.endswith("yx") and len(shown) <= 401


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)), max_size=8))
def test_cast_strings_are_what_json_makes_of_the_decoded_text(pieces: list[bytes]) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    got = b"".join(json.loads(_json_string(decoder, p) or b'""').encode() for p in pieces)
    whole = b"".join(pieces).decode("utf-8", "replace")
    assert got + decoder.decode(b"", final=True).encode() == whole.encode()
    for piece in pieces:
        if piece and piece.isascii():
            assert (
                _json_string(codecs.getincrementaldecoder("utf-8")(), piece)
                == json.dumps(piece.decode(), ensure_ascii=False).encode()
            )


def test_scp_follower_holds_little_for_a_hostile_client() -> None:
    events: list[dict[str, Any]] = []
    tracker = ScpTracker("upload", events.append)
    tracker.source_data(b"D0755 0 x\n" * 100_000)  # never answered, never closed
    assert [e["op"] for e in events] == ["untracked"]
    assert len(tracker._dirs) <= 512 and len(tracker._pending) <= 1024
