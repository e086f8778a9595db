"""Channel recordings: hot-path calls only append raw items to memory; the writer process
(:mod:`sshgate.recording.writer`) turns them into file lines.

One file per channel: an asciicast v2 cast for shells and other exec commands, JSON lines for
sftp operations, port forwards and file-transfer exec commands (scp, rsync), whose contents
would only bloat a cast.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable
from typing import Any

WAKE_BYTES = 1 << 20
"""Pending bytes after which a channel wakes the writer early, so memory stays bounded."""

Item = tuple[float, str, Any]


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def transfer_of(command: str | None) -> dict[str, Any] | None:
    """The file transfer an exec command performs (``scp -t``/``-f``, ``rsync --server``), or None."""
    try:
        argv = shlex.split(command or "")
    except ValueError:
        return None
    program = os.path.basename(argv[0]) if argv else ""
    if program == "scp":
        letters = "".join(a[1:] for a in argv[1:] if a.startswith("-") and not a.startswith("--"))
        if "t" not in letters and "f" not in letters:
            return None
        direction = "upload" if "t" in letters else "download"
        paths = [a for a in argv[1:] if not a.startswith("-")]
        return {"protocol": "scp", "direction": direction, "paths": paths}
    if program == "rsync" and "--server" in argv:
        direction = "download" if "--sender" in argv else "upload"
        paths = argv[argv.index(".") + 1 :] if "." in argv else []
        return {"protocol": "rsync", "direction": direction, "paths": paths}
    return None


class Channel:
    """What every channel keeps: counters, exit, times, and a list of pending items."""

    suffix = ""
    fmt = "lines"  # the writer's encoder for the file: JSON lines or an asciicast

    def __init__(self, n: int, kind: str, meta: dict[str, Any], wake: Callable[[], None]) -> None:
        self.n = n
        self.kind = kind
        self.meta = meta
        self.file = f"{n}-{self.suffix}"
        self.t0 = time.monotonic()
        self.opened_at = utc_now()
        self.closed_at: str | None = None
        self.exit_status: int | None = None
        self.exit_signal: str | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.closed = False
        self.started = False  # its file exists: the writer has opened it
        self.finished = False  # written to the end and closed by the writer
        self.digest: dict[str, Any] | None = None  # the finished file's, from the writer
        self._wake = wake
        self._items: list[Item] = []
        self._size = 0

    # hot path

    def backlog(self) -> int:
        return self._size

    def output(self, data: bytes, stderr: bool = False) -> None:
        self.bytes_out += len(data)

    def input(self, data: bytes) -> None:
        self.bytes_in += len(data)

    def resize(self, cols: int, rows: int) -> None:
        pass

    def event(self, doc: dict[str, Any]) -> None:
        self._items.append((time.monotonic(), "e", doc))

    def close(self, exit_status: int | None = None, exit_signal: str | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self.closed_at = utc_now()
        self.exit_status, self.exit_signal = exit_status, exit_signal
        self._closing()
        self._wake()

    # writer side

    def _closing(self) -> None:
        """Last items before the channel's file is finished."""

    def take(self) -> list[Item]:
        items, self._items, self._size = self._items, [], 0
        return items

    def header(self) -> bytes:
        return b""

    def describe(self) -> dict[str, Any]:
        """The channel's entry in session.json."""
        return {
            "n": self.n,
            "kind": self.kind,
            "file": self.file,
            **{k: v for k, v in self.meta.items() if v is not None},
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "exit_status": self.exit_status,
            "exit_signal": self.exit_signal,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }


class CastChannel(Channel):
    """A shell or exec channel as an asciicast v2 recording."""

    fmt = "cast"

    def __init__(
        self,
        n: int,
        kind: str,
        meta: dict[str, Any],
        wake: Callable[[], None],
        capture_input: bool,
        title: str,
    ) -> None:
        self.suffix = f"{kind}.cast"
        super().__init__(n, kind, meta, wake)
        self._capture = capture_input
        self._title = title
        self._timestamp = int(time.time())

    def output(self, data: bytes, stderr: bool = False) -> None:
        self.bytes_out += len(data)
        self._items.append((time.monotonic(), "o", data))
        self._size += len(data)
        if self._size > WAKE_BYTES:
            self._wake()

    def input(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self._capture:
            self._items.append((time.monotonic(), "i", data))
            self._size += len(data)

    def resize(self, cols: int, rows: int) -> None:
        self._items.append((time.monotonic(), "r", f"{cols}x{rows}"))

    def event(self, doc: dict[str, Any]) -> None:
        """Casts hold terminal bytes only; there is nothing else to record in them."""

    def header(self) -> bytes:
        cols, rows = self.meta.get("size") or (80, 24)
        head: dict[str, Any] = {"version": 2, "width": cols, "height": rows, "timestamp": self._timestamp}
        if self.meta.get("command"):
            head["command"] = self.meta["command"]
        head["title"] = self._title
        head["env"] = {"TERM": self.meta.get("term") or ""}
        return (json.dumps(head, ensure_ascii=False) + "\n").encode()


class TransferChannel(Channel):
    """An exec channel carrying scp or rsync: start and end events with bytes each way."""

    suffix = "exec.jsonl"

    def __init__(
        self, n: int, meta: dict[str, Any], wake: Callable[[], None], transfer: dict[str, Any]
    ) -> None:
        super().__init__(n, "exec", meta, wake)
        self.transfer = transfer
        self.event({"op": "start", "command": meta.get("command"), **transfer})

    def _closing(self) -> None:
        self.event(
            {
                "op": "end",
                "command": self.meta.get("command"),
                **self.transfer,
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "exit_status": self.exit_status,
                "exit_signal": self.exit_signal,
            }
        )


class SftpChannel(Channel):
    """An sftp channel: one line per file operation, from the relay's :class:`SftpTracker`."""

    suffix = "sftp.jsonl"


class ForwardChannel(Channel):
    """A ``direct-tcpip`` channel: open and close with host, port and bytes each way."""

    suffix = "forward.jsonl"

    def __init__(self, n: int, meta: dict[str, Any], wake: Callable[[], None]) -> None:
        super().__init__(n, "forward", meta, wake)
        self.event({"op": "open", "host": meta.get("host"), "port": meta.get("port")})

    def _closing(self) -> None:
        self.event(
            {
                "op": "close",
                "host": self.meta.get("host"),
                "port": self.meta.get("port"),
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
            }
        )


def make_channel(
    n: int, kind: str, meta: dict[str, Any], wake: Callable[[], None], capture_input: bool, title: str
) -> Channel:
    if kind == "forward":
        return ForwardChannel(n, meta, wake)
    if kind == "sftp":
        return SftpChannel(n, kind, meta, wake)
    transfer = transfer_of(meta.get("command")) if kind == "exec" else None
    if transfer is not None:
        return TransferChannel(n, meta, wake, transfer)
    return CastChannel(n, kind, meta, wake, capture_input, title)
