"""Server-sent events of live terminal output (docs/api.md, the ``live`` route). Pure.

Each event's data is an asciicast v2 event ``[t, "o", text]``; a chunk may end inside a UTF-8
sequence, so text is decoded incrementally per channel, as the asciicast export does.
"""

from __future__ import annotations

import codecs
import json

END = b"event: end\ndata: {}\n\n"
KEEPALIVE = b": keepalive\n\n"


class OutputEvents:
    """Turns one channel's output chunks into SSE ``data:`` events."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def event(self, t: float, data: bytes) -> bytes:
        text = self._decoder.decode(data)
        if not text:
            return b""
        body = json.dumps([round(t, 6), "o", text], separators=(",", ":"), ensure_ascii=True)
        # JSON never holds a raw newline, so one data: line carries the whole event.
        return b"data: " + body.encode("ascii") + b"\n\n"
