"""Reading recorded sessions: the layout of docs/recordings.md (raw bytes and timing logs) and the
one before it (asciicast files, session.json version 1), so both play, export and search alike.

A terminal channel reads as a stream of events ``(seconds, code, value)``: ``o`` output bytes
(an exec channel's stderr included, as a terminal shows it), ``i`` input bytes, ``r``
``(cols, rows)``. Files are read in pieces, so memory does not grow with a recording's size.
"""

from __future__ import annotations

import calendar
import codecs
import io
import json
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

from sshgate.recording import timing
from sshgate.recording.manifest import SESSION_FILE
from sshgate.recording.recorder import RecordingError
from sshgate.recording.search import LineMatcher
from sshgate.recording.store import SessionFiles

PIECE = 256 << 10
Event = tuple[float, str, Any]


MAX_DOCUMENT = 16 << 20
"""Bytes of session.json beyond which it is not read: no recorder writes one that large."""


def load(files: SessionFiles) -> dict[str, Any]:
    """session.json, with a version 1 document's fields under their version 2 names; raises
    :class:`RecordingError` when it is missing, unreadable or not a session document."""
    try:
        with files.open(SESSION_FILE) as f:
            return parse(f, files.where)
    except OSError as exc:
        raise RecordingError(f"{files.where}/{SESSION_FILE}: unreadable: {exc.strerror or exc}") from None


def parse(f: BinaryIO, where: str) -> dict[str, Any]:
    """An open session.json, read up to :data:`MAX_DOCUMENT` bytes, as :func:`load` returns it."""
    pieces, size = [], 0
    while size <= MAX_DOCUMENT and (piece := f.read(64 << 10)):
        pieces.append(piece)
        size += len(piece)
    if size > MAX_DOCUMENT:
        raise RecordingError(f"{where}/{SESSION_FILE}: larger than {MAX_DOCUMENT} bytes")
    try:
        return upgrade(json.loads(b"".join(pieces)))
    except (ValueError, TypeError, AttributeError) as exc:
        raise RecordingError(f"{where}/{SESSION_FILE}: not a session document: {exc}") from None


def upgrade(doc: Any) -> dict[str, Any]:
    """A version 2 document as it is; a version 1 one with its fields under the version 2 names.
    Raises ValueError (or TypeError, AttributeError) for what is not a session document."""
    if not isinstance(doc, dict):
        raise ValueError("not an object")
    if doc.get("version", 1) >= 2:
        return doc
    user = doc.get("user") or {}
    client = doc.get("client") or {}
    name = user.get("email") or user.get("name")
    return {
        **doc,
        "id": doc.get("session_id"),
        "started": doc.get("started_at"),
        "ended": doc.get("ended_at"),
        "user": name,
        "identity": f"idp:{user.get('provider') or 'formal'}:{user.get('type') or 'human'}:{name}",
        "login": user.get("login"),
        "groups": user.get("groups") or [],
        "client_ip": client.get("ip"),
        "client_version": client.get("version"),
        "channels": [{**c, "files": [c["file"]]} for c in doc.get("channels", []) if "file" in c],
    }


def is_terminal(channel: dict[str, Any]) -> bool:
    """A shell or exec channel with output to play (not an scp or rsync transfer)."""
    files = channel.get("files") or []
    return any(f.endswith((".timing", ".cast")) for f in files) and not any(
        f.endswith(".jsonl") for f in files
    )


def terminal_channel(doc: dict[str, Any], n: int | None) -> dict[str, Any]:
    """Channel ``n``, or the first terminal channel; raises :class:`RecordingError` otherwise."""
    for channel in doc.get("channels", []):
        if (n is None and is_terminal(channel)) or channel.get("n") == n:
            if not is_terminal(channel):
                raise RecordingError(f"channel {n} is a {channel.get('kind')} channel, not a terminal")
            return dict(channel)
    raise RecordingError(f"session {doc.get('id')} has no terminal channel" + (f" {n}" if n else ""))


def legacy_cast(channel: dict[str, Any]) -> str | None:
    """The asciicast file of a channel recorded before the raw layout, or None."""
    casts = [f for f in channel.get("files", []) if isinstance(f, str) and f.endswith(".cast")]
    return casts[0] if casts else None


def events(files: SessionFiles, channel: dict[str, Any]) -> Iterator[Event]:
    """The channel's events; of an active session, those flushed so far."""
    cast = legacy_cast(channel)
    return _cast_events(files, cast) if cast is not None else _raw_events(files, channel)


def opened_unix(channel: dict[str, Any]) -> int:
    try:
        return calendar.timegm(time.strptime(str(channel.get("opened_at")), "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return 0


class _Log:
    """A data log read in order; its first line (script's header) is skipped."""

    def __init__(self, files: SessionFiles, name: str) -> None:
        self.files = files
        self.name = name
        self._file: BinaryIO | None = None
        self._ended = False

    def read(self, size: int) -> Iterator[bytes]:
        if self._ended:
            return
        if self._file is None:
            try:
                self._file = self.files.open(self.name)
            except FileNotFoundError:
                self._ended = True
                return
            self._file.readline()
        while size > 0:
            piece = self._file.read(min(size, PIECE))
            if not piece:
                self._ended = True  # cut short (a crash between the data and its timing line)
                return
            size -= len(piece)
            yield piece

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _complete_lines(lines: BinaryIO) -> Iterator[bytes]:
    """Lines that end in a newline: an active session's last one may be half written."""
    for line in lines:
        if not line.endswith(b"\n"):
            return
        yield line


def _raw_events(files: SessionFiles, channel: dict[str, Any]) -> Iterator[Event]:
    stem = f"{channel.get('n')}-{channel.get('kind')}"
    logs = {name: _Log(files, f"{stem}.{name}") for name in ("out", "err", "in")}
    try:
        with files.open(f"{stem}.timing") as lines:
            for step in timing.parse(_complete_lines(lines)):
                if step.kind == "O" or step.name == "STDERR":
                    log, code = logs["out" if step.kind == "O" else "err"], "o"
                elif step.kind == "I":
                    log, code = logs["in"], "i"
                else:
                    if step.name == "SIGWINCH":
                        yield step.at, "r", (step.cols, step.rows)
                    continue
                for piece in log.read(step.size):
                    yield step.at, code, piece
    except (OSError, timing.TimingError) as exc:
        raise RecordingError(f"{files.where}/{stem}.timing: {exc}") from None
    finally:
        for log in logs.values():
            log.close()


def _cast_events(files: SessionFiles, name: str) -> Iterator[Event]:
    try:
        with io.TextIOWrapper(files.open(name), encoding="utf-8") as f:
            f.readline()
            for line in f:
                at, code, value = json.loads(line)
                if code == "r":
                    cols, _, rows = value.partition("x")
                    yield float(at), "r", (int(cols), int(rows))
                elif code in ("o", "i"):
                    yield float(at), code, value.encode()
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise RecordingError(f"{files.where}/{name}: {exc}") from None


def output_lines(files: SessionFiles, channel: dict[str, Any], text: str) -> Iterator[str]:
    """The plain lines of a terminal channel's output that contain ``text`` (search.py). A read
    error is raised after the lines found up to it."""
    matcher = LineMatcher(text)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    failed = None
    try:
        for _, code, value in events(files, channel):
            if code == "o":
                yield from matcher.feed(decoder.decode(value))
    except RecordingError as exc:
        failed = exc
    yield from matcher.feed(decoder.decode(b"", final=True)) + matcher.end()
    if failed is not None:
        raise failed
