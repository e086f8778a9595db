"""Following a legacy scp transfer (``scp -O``: ``scp -t`` or ``scp -f`` run by the server):
one event per file with its name, size and outcome. Pure: bytes in, dicts out, no I/O.

The source (the client for ``-t``, the server for ``-f``) sends control lines (``C<mode> <size>
<name>``, ``D``/``E`` around a directory, ``T`` times, ``\\x01``/``\\x02`` errors) and, once
the sink acknowledged a ``C`` line, the file's bytes and a NUL. The sink answers each with one
byte, NUL for success, or ``\\x01``/``\\x02`` and a message line. The source waits for each
answer, so the gateway always sees an answer before what follows it. File contents are skipped
by length, never looked at byte by byte.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

MAX_LINE = 4096
"""A control line longer than this is not scp: tracking stops (the bytes still flow)."""
MAX_PENDING = 1024
MAX_DEPTH = 512
"""More unanswered lines, or directories deeper, than a real transfer has: tracking stops, so
a client cannot make the gateway hold more for it than a few hundred KiB."""

Event = dict[str, Any]


class ScpTracker:
    __slots__ = (
        "_data_left",
        "_dirs",
        "_emit",
        "_file",
        "_line",
        "_lost",
        "_message",
        "_pending",
        "direction",
    )

    def __init__(self, direction: str, emit: Callable[[Event], None]) -> None:
        self.direction = direction
        self._emit = emit
        self._line = bytearray()
        self._dirs: list[str] = []
        self._pending: deque[tuple[str, str, int]] = deque()  # (what, file, size) awaiting an answer
        self._file: tuple[str, int] | None = None  # acknowledged C line: its data comes next
        self._data_left = 0
        self._message: bytearray | None = None  # a sink's error answer being read
        self._lost = False

    def source_data(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end and not self._lost:
            if self._data_left:
                step = min(self._data_left, end - pos)
                self._data_left -= step
                pos += step
                if not self._data_left and self._file is not None:
                    self._pending.append(("data", *self._file))
                    self._file = None
                continue
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline
            self._line += data[pos:stop]
            pos = stop + 1
            if len(self._line) > MAX_LINE:
                self._give_up("a control line longer than 4096 bytes")
            elif newline >= 0:
                line, self._line = bytes(self._line), bytearray()
                self._control(line.decode("utf-8", "replace"))

    def sink_data(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end and not self._lost:
            if self._message is not None:
                newline = data.find(b"\n", pos)
                stop = end if newline < 0 else newline
                self._message += data[pos:stop][: MAX_LINE - len(self._message)]
                pos = stop + 1
                if newline >= 0:
                    message, self._message = self._message.decode("utf-8", "replace"), None
                    self._answer(message)
            elif not self._pending:
                return  # the sink's first NUL (scp -f), or answers to nothing tracked
            elif data[pos] == 0:
                pos += 1
                self._answer(None)
            else:
                pos += 1
                self._message = bytearray()

    def _control(self, line: str) -> None:
        kind, text = line[:1], line[1:]
        if len(self._pending) >= MAX_PENDING or len(self._dirs) >= MAX_DEPTH:
            self._give_up("more unanswered lines or nested directories than scp makes")
            return
        if kind == "C":
            _, size, name = [*text.split(" ", 2), "", ""][:3]
            if not (size.isascii() and size.isdigit()) or not name:
                self._give_up("a malformed file line")
                return
            self._pending.append(("C", "/".join([*self._dirs, name]), int(size)))
        elif kind == "D":
            self._dirs.append(text.split(" ", 2)[-1])
            self._pending.append(("D", "", 0))
        elif kind == "E":
            if self._dirs:
                self._dirs.pop()
            self._pending.append(("E", "", 0))
        elif kind == "T":
            self._pending.append(("T", "", 0))
        elif kind in ("\x01", "\x02"):
            self._emit({"op": "error", "direction": self.direction, "status": "error", "message": text})
        else:
            self._give_up("an unknown control line")

    def _answer(self, error: str | None) -> None:
        what, file, size = self._pending.popleft()
        if what == "C" and error is None:
            self._file, self._data_left = (file, size), size + 1  # the contents and a NUL
        elif what in ("C", "data"):
            event: Event = {"op": "file", "file": file, "direction": self.direction, "bytes": size,
                            "status": "ok" if error is None else "error"}  # fmt: skip
            if error is not None:
                event["message"] = error
            self._emit(event)

    def _give_up(self, why: str) -> None:
        self._lost = True
        self._emit({"op": "untracked", "direction": self.direction, "reason": why})
