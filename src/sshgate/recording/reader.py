"""Reading recorded sessions: the layout of docs/recordings.md (raw bytes and timing logs) and the
one before it (asciicast files, session.json version 1), so both play, export and search alike.

A terminal channel reads as a stream of events ``(seconds, code, value)``: ``o`` output bytes
(an exec channel's stderr included, as a terminal shows it), ``i`` input bytes, ``r``
``(cols, rows)``. Files are read in pieces, so memory does not grow with a recording's size.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from sshgate.recording import timing
from sshgate.recording.manifest import SESSION_FILE
from sshgate.recording.recorder import SESSION_ID, RecordingError

PIECE = 256 << 10
Event = tuple[float, str, Any]


def sessions(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every session under ``root`` with its (upgraded) document, newest first."""
    found = []
    for path in root.glob(f"[0-9]*/*/{SESSION_FILE}"):
        try:
            found.append((path.parent, load(path.parent)))
        except RecordingError:
            continue
    return sorted(found, key=lambda pair: str(pair[1].get("started")), reverse=True)


def find(root: Path, session_id: str) -> Path:
    found = []
    if SESSION_ID.fullmatch(session_id):
        found = [p for p in root.glob(f"[0-9]*/{session_id}") if (p / SESSION_FILE).is_file()]
    if not found:
        raise RecordingError(f"no recording {session_id} in {root}")
    return found[0]


def load(directory: Path) -> dict[str, Any]:
    """session.json, with a version 1 document's fields under their version 2 names."""
    try:
        doc = json.loads((directory / SESSION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RecordingError(f"{directory / SESSION_FILE}: unreadable: {exc}") from None
    if not isinstance(doc, dict):
        raise RecordingError(f"{directory / SESSION_FILE}: not a session document")
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


def legacy_cast(directory: Path, channel: dict[str, Any]) -> Path | None:
    """The asciicast file of a channel recorded before the raw layout, or None."""
    casts = [f for f in channel.get("files", []) if f.endswith(".cast")]
    return directory / casts[0] if casts else None


def events(directory: Path, channel: dict[str, Any]) -> Iterator[Event]:
    cast = legacy_cast(directory, channel)
    return _cast_events(cast) if cast is not None else _raw_events(directory, channel)


def opened_unix(channel: dict[str, Any]) -> int:
    try:
        return calendar.timegm(time.strptime(str(channel.get("opened_at")), "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return 0


class _Log:
    """A data log read in order; its first line (script's header) is skipped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._ended = False

    def read(self, size: int) -> Iterator[bytes]:
        if self._ended:
            return
        if self._file is None:
            try:
                self._file = self.path.open("rb")
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


def _raw_events(directory: Path, channel: dict[str, Any]) -> Iterator[Event]:
    stem = f"{channel['n']}-{channel['kind']}"
    logs = {name: _Log(directory / f"{stem}.{name}") for name in ("out", "err", "in")}
    try:
        with (directory / f"{stem}.timing").open("rb") as lines:
            for step in timing.parse(lines):
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
        raise RecordingError(f"{directory / (stem + '.timing')}: {exc}") from None
    finally:
        for log in logs.values():
            log.close()


def _cast_events(path: Path) -> Iterator[Event]:
    try:
        with path.open(encoding="utf-8") as f:
            f.readline()
            for line in f:
                at, code, value = json.loads(line)
                if code == "r":
                    cols, _, rows = value.partition("x")
                    yield float(at), "r", (int(cols), int(rows))
                elif code in ("o", "i"):
                    yield float(at), code, value.encode()
    except (OSError, ValueError) as exc:
        raise RecordingError(f"{path}: {exc}") from None
