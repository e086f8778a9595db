"""``recordings search``: the lines of terminal output that contain a text, as a person read
them: escape sequences and control characters removed, a carriage return ending a line as a
newline does. Pure: text in, lines out.
"""

from __future__ import annotations

import re

MAX_LINE = 64 << 10
"""Characters after which a line without a newline is searched and cut (binary output); a match
that spans the cut is not found."""
SHOWN = 400
"""Characters of a long matching line shown around the match."""

_ESCAPE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves
    r"|\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS and other strings
    r"|[ -/]*[0-~])"  # two- and three-character sequences
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)
_CONTROLS = {c: None for c in [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F]}


def plain(line: str) -> str:
    """``line`` without escape sequences and control characters (tabs are kept)."""
    if "\x1b" in line or "\x9b" in line:
        line = _ESCAPE.sub("", line)
    return line.translate(_CONTROLS)


class LineMatcher:
    """Feed decoded terminal output; get back the plain lines that contain ``text``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._pending = ""

    def feed(self, chunk: str) -> list[str]:
        self._pending += chunk.replace("\r", "\n")
        *lines, self._pending = self._pending.split("\n")
        while len(self._pending) > MAX_LINE:
            lines.append(self._pending[:MAX_LINE])
            self._pending = self._pending[MAX_LINE:]
        return self._matching(lines)

    def end(self) -> list[str]:
        rest, self._pending = self._pending, ""
        return self._matching([rest])

    def _matching(self, lines: list[str]) -> list[str]:
        found = []
        for line in lines:
            if self.text in line or not line.isprintable():  # else cleaning cannot make it match
                cleaned = plain(line).rstrip()
                at = cleaned.find(self.text)
                if at >= 0:
                    found.append(_window(cleaned, at, len(self.text)))
        return found


def _window(line: str, at: int, length: int) -> str:
    if len(line) <= SHOWN:
        return line
    start = max(0, at - (SHOWN - length) // 2)
    return ("…" if start else "") + line[start : start + SHOWN] + ("…" if start + SHOWN < len(line) else "")
