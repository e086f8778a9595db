"""The util-linux ``script`` advanced timing log kept beside a channel's raw bytes (docs/recordings.md).

Each line is ``TYPE DELAY REST``: ``DELAY`` is seconds since the previous line, with six
decimals as scriptreplay(1) reads them. ``O``/``I`` lines say how many bytes of the output or
input log came then; ``S`` lines are events (``SIGWINCH ROWS=r COLS=c``, and ``STDERR BYTES=n``
for an exec channel's stderr, which scriptreplay skips as it skips any event it does not play);
``H`` lines are headers. Data logs start with one line that scriptreplay skips
(``Script started on ...``), as script(1) writes them. Pure: formatting and parsing only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\\]")


class TimingError(ValueError):
    """A timing log line that is not in the format above."""


def _clean(text: str) -> str:
    """One line, whatever ``text`` holds: control characters and backslashes as ``\\xNN``."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def script_time(unix: float) -> str:
    """A time as script(1) writes it: ``2026-12-04 20:24:14+00:00``."""
    return time.strftime("%Y-%m-%d %H:%M:%S+00:00", time.gmtime(unix))


def log_header(unix: float, fields: dict[str, str]) -> bytes:
    """The first line of a data log (scriptreplay skips it)."""
    described = " ".join(f'{name}="{_clean(value)}"' for name, value in fields.items())
    return f"Script started on {script_time(unix)} [{described}]\n".encode()


def header(name: str, value: str) -> bytes:
    return f"H 0.000000 {name} {_clean(value)}\n".encode()


def data(kind: str, delay: float, size: int) -> bytes:
    """``kind`` is ``O`` (output log) or ``I`` (input log)."""
    return f"{kind} {max(delay, 0.0):.6f} {size}\n".encode()


def resize(delay: float, cols: int, rows: int) -> bytes:
    return f"S {max(delay, 0.0):.6f} SIGWINCH ROWS={rows} COLS={cols}\n".encode()


def stderr(delay: float, size: int) -> bytes:
    return f"S {max(delay, 0.0):.6f} STDERR BYTES={size}\n".encode()


@dataclass(frozen=True, slots=True)
class Step:
    """One line: ``at`` is seconds since the log started; ``size`` is set for data lines and
    STDERR events, ``cols``/``rows`` for SIGWINCH."""

    kind: str
    at: float
    name: str = ""
    value: str = ""
    size: int = 0
    cols: int = 0
    rows: int = 0


def _number(text: str, line: int) -> int:
    if not text.isdigit():
        raise TimingError(f"line {line}: {text!r} is not a byte count")
    return int(text)


def parse(lines: Iterable[bytes]) -> Iterator[Step]:
    """The steps of a timing log, streaming; raises :class:`TimingError` on a malformed line."""
    at = 0.0
    for number, raw in enumerate(lines, 1):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        kind, _, rest = line.partition(" ")
        delay_text, _, rest = rest.partition(" ")
        try:
            delay = float(delay_text)
        except ValueError:
            raise TimingError(f"line {number}: {delay_text!r} is not a delay") from None
        if kind not in ("O", "I", "S", "H") or not delay >= 0:
            raise TimingError(f"line {number}: not a timing line")
        at += delay
        if kind in ("O", "I"):
            yield Step(kind, at, size=_number(rest, number))
            continue
        name, _, value = rest.partition(" ")
        fields = dict(f.partition("=")[::2] for f in value.split()) if kind == "S" else {}
        if kind == "S" and name == "SIGWINCH":
            yield Step(kind, at, name, value, cols=_number(fields.get("COLS", ""), number),
                       rows=_number(fields.get("ROWS", ""), number))  # fmt: skip
        elif kind == "S" and name == "STDERR":
            yield Step(kind, at, name, value, size=_number(fields.get("BYTES", ""), number))
        else:
            yield Step(kind, at, name, value)
