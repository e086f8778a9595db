"""asciicast v2 from a terminal channel's events, written as it reads (``recordings export``).

Output and input are decoded as UTF-8 with one incremental decoder each, so a character split
between two reads stays whole; bytes that are not UTF-8 become U+FFFD, as a terminal shows
them. The cast is therefore always valid JSON; the recording's raw files keep the exact bytes.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable
from json.encoder import encode_basestring
from typing import Any, BinaryIO

from sshgate.recording.reader import Event


def header(doc: dict[str, Any], channel: dict[str, Any], timestamp: int) -> dict[str, Any]:
    cols, rows = channel.get("size") or (80, 24)
    head: dict[str, Any] = {"version": 2, "width": cols, "height": rows, "timestamp": timestamp}
    if channel.get("command"):
        head["command"] = channel["command"]
    head["title"] = f"{doc.get('user')} on {doc.get('resource')} as {doc.get('native_user')}"
    head["env"] = {"TERM": channel.get("term") or ""}
    return head


def write(out: BinaryIO, head: dict[str, Any], events: Iterable[Event]) -> None:
    out.write(json.dumps(head, ensure_ascii=False).encode() + b"\n")
    decoders = {code: codecs.getincrementaldecoder("utf-8")("replace") for code in "oi"}
    at = 0.0
    for at, code, value in events:
        text = f"{value[0]}x{value[1]}" if code == "r" else decoders[code].decode(value)
        if text:
            _event(out, at, code, text)
    for code, decoder in decoders.items():
        text = decoder.decode(b"", final=True)  # a character cut short by the end
        if text:
            _event(out, at, code, text)


def _event(out: BinaryIO, at: float, code: str, text: str) -> None:
    out.write(f'[{at:.6f}, "{code}", '.encode())
    out.write(encode_basestring(text).encode())
    out.write(b"]\n")
