"""asciicast v2 from a terminal channel's events, written as it reads (``recordings export``, the
web app's cast route).

Output and input are decoded as UTF-8 with one incremental decoder each, so a character split
between two reads stays whole; bytes that are not UTF-8 become U+FFFD, as a terminal shows
them. The cast is therefore always valid JSON; the recording's raw files keep the exact bytes.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from json.encoder import encode_basestring
from typing import Any, Protocol

from sshgate.recording import reader
from sshgate.recording.reader import Event
from sshgate.recording.recorder import RecordingError
from sshgate.recording.store import SessionFiles

_SPECIAL = bytes(range(0x20)) + b'"\\'
_PLAIN = bytes(b for b in range(0x100) if b not in _SPECIAL)
_SHORT = {8: b"\\b", 9: b"\\t", 10: b"\\n", 12: b"\\f", 13: b"\\r", 0x22: b'\\"', 0x5C: b"\\\\"}
_REPLACEMENTS = [
    (bytes([b]), _SHORT.get(b, b"\\u%04x" % b)) for b in sorted(_SPECIAL, key=lambda b: b != 0x5C)
]
"""Backslash first: the others put backslashes in."""
_SAMPLE = 4096
_SPARSE = 64
"""Fewer than one byte in this many to escape: ``bytes.replace`` per kind of byte is faster
(per measurement, 2-3x on text) than the JSON encoder, which is faster on dense ones."""


class Output(Protocol):
    def write(self, data: bytes, /) -> int: ...


def header(doc: dict[str, Any], channel: dict[str, Any], timestamp: int) -> dict[str, Any]:
    cols, rows = channel.get("size") or (80, 24)
    head: dict[str, Any] = {"version": 2, "width": cols, "height": rows, "timestamp": timestamp}
    if channel.get("command"):
        head["command"] = channel["command"]
    head["title"] = f"{doc.get('user')} on {doc.get('resource')} as {doc.get('native_user')}"
    head["env"] = {"TERM": channel.get("term") or ""}
    return head


def write(out: Output, head: dict[str, Any], events: Iterable[Event]) -> None:
    for piece in pieces(head, events):
        out.write(piece)


def export(files: SessionFiles, doc: dict[str, Any], channel: dict[str, Any]) -> Iterator[bytes]:
    """A terminal channel as asciicast v2, in pieces: a recording from before the raw layout as
    its cast file is, else encoded from the raw files (of an active session, what is flushed)."""
    cast = reader.legacy_cast(channel)
    if cast is None:
        head = header(doc, channel, reader.opened_unix(channel))
        yield from pieces(head, reader.events(files, channel))
        return
    try:
        with files.open(cast) as f:
            while piece := f.read(1 << 20):
                yield piece
    except OSError as exc:
        raise RecordingError(f"{files.where}/{cast}: {exc.strerror or exc}") from None


def pieces(head: dict[str, Any], events: Iterable[Event]) -> Iterator[bytes]:
    """The cast's bytes as they are encoded; a large output event is not copied whole."""
    yield json.dumps(head, ensure_ascii=False).encode() + b"\n"
    decoders = {code: codecs.getincrementaldecoder("utf-8")("replace") for code in "oi"}
    at = 0.0
    for at, code, value in events:
        if code == "r":
            yield from _event(at, code, f'"{value[0]}x{value[1]}"'.encode())
        elif text := _json_string(decoders[code], value):
            yield from _event(at, code, text)
    for code, decoder in decoders.items():
        if tail := decoder.decode(b"", final=True):  # a character cut short by the end
            yield from _event(at, code, encode_basestring(tail).encode())


def _json_string(decoder: codecs.IncrementalDecoder, data: bytes) -> bytes:
    """``data`` as a JSON string (quotes included), or b"" when it completes no character.

    Escaping bytes before decoding gives the same text: every byte escaped is ASCII, which
    never belongs to a multi-byte character."""
    if len(data[:_SAMPLE].translate(None, _PLAIN)) * _SPARSE <= min(len(data), _SAMPLE):
        found = data.translate(None, _PLAIN)
        if len(found) * _SPARSE <= len(data):
            for raw, escaped in _REPLACEMENTS:
                if raw in found:
                    data = data.replace(raw, escaped)
            text = decoder.decode(data)
            return b'"' + text.encode() + b'"' if text else b""
    text = decoder.decode(data)
    return encode_basestring(text).encode() if text else b""


def _event(at: float, code: str, string: bytes) -> tuple[bytes, bytes, bytes]:
    return f'[{at:.6f}, "{code}", '.encode(), string, b"]\n"
