"""Channel recordings on the relay's hot path: each call appends a reference to the bytes (and
the time) to a list, nothing more; the recorder's flush thread writes them (files.py).

Terminal channels (shells, and exec commands other than file transfers) keep the raw bytes and
a script(1) timing log; scp and rsync transfers, sftp and port forwards keep JSON lines, plus their
bytes only when ``transfer_data`` / ``forward_data`` ask for them (docs/recordings.md).
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sshgate.recording import timing
from sshgate.recording.files import ChannelFiles, Item, RecordFile
from sshgate.recording.scp import ScpTracker

WAKE_BYTES = 8 << 20
"""Pending bytes after which a channel wakes the recorder early, so memory stays bounded (the
relay's high-water mark is twice this). Each flush is a round trip to the recorder's thread
(about 8 ms of hand-offs with a busy event loop, measured): 4 MiB rather than 1 took 8.9 -> 8.1
s/GB of gateway CPU recording a bulk download (loaded VM), and 8 rather than 4 took recording
on/off from 0.56-0.64x to 0.72-0.79x (bench_relay, alternating runs, same machine)."""


@dataclass(frozen=True)
class Options:
    """The recorder's settings channels need."""

    capture_input: bool = False
    forward_data: bool = False
    transfer_data: bool = False


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


_TRANSFER_PROGRAMS = {
    f"{where}{name}" for name in ("scp", "rsync") for where in ("", "/usr/bin/", "/bin/", "/usr/local/bin/")
}


def _one_program(command: str) -> bool:
    """Whether a shell runs ``command`` as one program and nothing else: no operator, redirection,
    substitution or second line outside quotes (``scp -f x; cat secret`` is not a transfer)."""
    quote = ""
    escaped = False
    for ch in command:
        if escaped:
            escaped = False
        elif quote == "'":
            quote = "" if ch == "'" else quote
        elif ch == "\\":
            escaped = True
        elif ch in "$`\n\r":
            return False
        elif quote == '"':
            quote = "" if ch == '"' else quote
        elif ch in "'\"":
            quote = ch
        elif ch in ";&|<>(){}":
            return False
    return not quote and not escaped


def transfer_of(command: str | None) -> dict[str, Any] | None:
    """The file transfer an exec command performs (``scp -t``/``-f``, ``rsync --server``), or None.

    A transfer's bytes are recorded as events, not kept (docs/recordings.md), so only a line that
    runs the system's scp or rsync and nothing else counts: anything more is a command whose
    output is recorded.
    """
    if command is None or not _one_program(command):
        return None
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    program = argv[0] if argv else ""
    if program not in _TRANSFER_PROGRAMS:
        return None
    if os.path.basename(program) == "scp":
        letters = "".join(a[1:] for a in argv[1:] if a.startswith("-") and not a.startswith("--"))
        if "t" not in letters and "f" not in letters:
            return None
        direction = "upload" if "t" in letters else "download"
        paths = [a for a in argv[1:] if not a.startswith("-")]
        return {"protocol": "scp", "direction": direction, "paths": paths}
    if "--server" in argv:
        direction = "download" if "--sender" in argv else "upload"
        paths = argv[argv.index(".") + 1 :] if "." in argv else []
        return {"protocol": "rsync", "direction": direction, "paths": paths}
    return None


class Channel:
    """What every channel keeps: counters, exit, times, and the items not yet written.

    ``dirty`` is called when the first item arrives after a flush took the last ones, so the
    recorder visits only channels with something to write.
    """

    keeps_output = False

    def __init__(self, n: int, kind: str, meta: dict[str, Any], dirty: Callable[[Channel], None]) -> None:
        self.n = n
        self.kind = kind
        self.meta = meta
        self.t0 = time.monotonic()
        self.opened_unix = time.time()
        self.opened_at = utc_now()
        self.closed_at: str | None = None
        self.exit_status: int | None = None
        self.exit_signal: str | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.closed = False
        self.finished = False  # its files are complete: the recorder wrote the close
        self.files = ChannelFiles(self.t0, {})  # each kind sets its own; written by the flush thread
        self._dirty = dirty
        self._items: list[Item] = []
        self._size = 0

    # hot path

    def backlog(self) -> int:
        return self._size

    def _add(self, item: Item, size: int = 0) -> None:
        if not self._items:
            self._dirty(self)
        self._items.append(item)
        if size:
            self._size += size
            if self._size > WAKE_BYTES >= self._size - size:  # once, as the backlog crosses it
                self._dirty(self)

    def output(self, data: bytes, stderr: bool = False) -> None:
        self.bytes_out += len(data)

    def input(self, data: bytes) -> None:
        self.bytes_in += len(data)

    def resize(self, cols: int, rows: int) -> None:
        pass

    def event(self, doc: dict[str, Any]) -> None:
        self._add((time.monotonic(), "j", doc))

    def close(self, exit_status: int | None = None, exit_signal: str | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self.closed_at = utc_now()
        self.exit_status, self.exit_signal = exit_status, exit_signal
        self._closing()
        self._dirty(self)

    def _closing(self) -> None:
        """Last items before the channel's files are finished."""

    # recorder side

    def take(self) -> list[Item]:
        items, self._items, self._size = self._items, [], 0
        return items

    def closing_lines(self) -> list[bytes]:
        """Timing headers written with the last flush, as script(1) ends its log."""
        if self.files.timing is None:
            return []
        lines = [timing.header("DURATION", f"{time.monotonic() - self.t0:.6f}")]
        if self.exit_status is not None:
            lines.append(timing.header("EXIT_CODE", str(self.exit_status)))
        return lines

    def describe(self) -> dict[str, Any]:
        """The channel's entry in session.json."""
        return {
            "n": self.n,
            "kind": self.kind,
            "files": self.files.names(),
            **{k: v for k, v in self.meta.items() if v is not None},
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "exit_status": self.exit_status,
            "exit_signal": self.exit_signal,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }


def _stream_files(directory: Path, stem: str, codes: str, first_line: bytes = b"") -> dict[str, RecordFile]:
    suffixes = {"o": "out", "e": "err", "i": "in"}
    return {code: RecordFile(directory / f"{stem}.{suffixes[code]}", first_line) for code in codes}


class TerminalChannel(Channel):
    """A shell or exec channel: raw output (stderr apart for exec), keystrokes with
    ``capture_input``, and the timing log scriptreplay plays."""

    keeps_output = True

    def __init__(self, n: int, kind: str, meta: dict[str, Any], dirty: Callable[[Channel], None],
                 directory: Path, capture_input: bool) -> None:  # fmt: skip
        super().__init__(n, kind, meta, dirty)
        self._err = "e" if kind == "exec" else "o"  # a terminal shows stderr with the rest
        self._capture = capture_input
        codes = "o" + ("e" if kind == "exec" else "") + ("i" if capture_input else "")
        self.files = terminal_files(self, directory, f"{n}-{kind}", codes)

    def output(self, data: bytes, stderr: bool = False) -> None:
        self.bytes_out += len(data)
        self._add((time.monotonic(), self._err if stderr else "o", data), len(data))

    def input(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self._capture:
            self._add((time.monotonic(), "i", data), len(data))

    def resize(self, cols: int, rows: int) -> None:
        self._add((time.monotonic(), "r", (cols, rows)))


def terminal_files(channel: Channel, directory: Path, stem: str, codes: str) -> ChannelFiles:
    """Data logs and the timing log of a terminal (or recorded transfer) channel."""
    meta = channel.meta
    fields: dict[str, str] = {}
    if meta.get("command"):
        fields["COMMAND"] = meta["command"]
    if meta.get("term"):
        fields["TERM"] = meta["term"]
    cols, rows = meta.get("size") or (80, 24)
    if meta.get("pty"):
        fields |= {"COLUMNS": str(cols), "LINES": str(rows)}
    streams = _stream_files(directory, stem, codes, timing.log_header(channel.opened_unix, fields))
    headers = [timing.header("START_TIME", timing.script_time(channel.opened_unix))]
    headers += [timing.header(name, value) for name, value in fields.items()]
    headers.append(timing.header("OUTPUT_LOG", streams["o"].name))
    if "i" in streams:
        headers.append(timing.header("INPUT_LOG", streams["i"].name))
    headers.append(timing.header("TIMING_LOG", f"{stem}.timing"))
    return ChannelFiles(channel.t0, streams, RecordFile(directory / f"{stem}.timing"), None, headers)


class TransferChannel(Channel):
    """An exec channel carrying scp or rsync: events with each file (scp) or the whole transfer
    (rsync), its direction, bytes and outcome; the bytes themselves only with ``transfer_data``."""

    def __init__(self, n: int, meta: dict[str, Any], dirty: Callable[[Channel], None], directory: Path,
                 transfer: dict[str, Any], keep_data: bool) -> None:  # fmt: skip
        super().__init__(n, "exec", meta, dirty)
        self.transfer = transfer
        self._keep = self.keeps_output = keep_data
        stem = f"{n}-exec"
        if keep_data:
            self.files = terminal_files(self, directory, stem, "oei")
        self.files.events = RecordFile(directory / f"{stem}.jsonl")
        self._scp = ScpTracker(transfer["direction"], self.event) if transfer["protocol"] == "scp" else None
        self.event({"op": "start", "command": meta.get("command"), **transfer})

    def output(self, data: bytes, stderr: bool = False) -> None:
        self.bytes_out += len(data)
        if self._scp is not None and not stderr:
            if self.transfer["direction"] == "download":
                self._scp.source_data(data)
            else:
                self._scp.sink_data(data)
        if self._keep:
            self._add((time.monotonic(), "e" if stderr else "o", data), len(data))

    def input(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self._scp is not None:
            if self.transfer["direction"] == "upload":
                self._scp.source_data(data)
            else:
                self._scp.sink_data(data)
        if self._keep:
            self._add((time.monotonic(), "i", data), len(data))

    def _closing(self) -> None:
        moved = self.bytes_in if self.transfer["direction"] == "upload" else self.bytes_out
        status = "ok" if self.exit_status == 0 else "error"
        self.event({"op": "end", "command": self.meta.get("command"), **self.transfer, "bytes": moved,
                    "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "status": status,
                    "exit_status": self.exit_status, "exit_signal": self.exit_signal})  # fmt: skip


class SftpChannel(Channel):
    """An sftp channel: one line per file operation, from the relay's :class:`SftpTracker`."""

    def __init__(
        self, n: int, meta: dict[str, Any], dirty: Callable[[Channel], None], directory: Path
    ) -> None:
        super().__init__(n, "sftp", meta, dirty)
        self.files = ChannelFiles(self.t0, {}, events=RecordFile(directory / f"{n}-sftp.jsonl"))


class ForwardChannel(Channel):
    """A ``direct-tcpip`` channel: open and close with host, port and bytes each way; with
    ``forward_data`` the bytes too (``.out`` towards the client, ``.in`` from it), raw."""

    def __init__(self, n: int, meta: dict[str, Any], dirty: Callable[[Channel], None], directory: Path,
                 keep_data: bool) -> None:  # fmt: skip
        super().__init__(n, "forward", meta, dirty)
        self._keep = keep_data
        streams = _stream_files(directory, f"{n}-forward", "oi") if keep_data else {}
        self.files = ChannelFiles(self.t0, streams, events=RecordFile(directory / f"{n}-forward.jsonl"))
        self.event({"op": "open", "host": meta.get("host"), "port": meta.get("port")})

    def output(self, data: bytes, stderr: bool = False) -> None:
        self.bytes_out += len(data)
        if self._keep:
            self._add((0.0, "o", data), len(data))

    def input(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self._keep:
            self._add((0.0, "i", data), len(data))

    def _closing(self) -> None:
        self.event({"op": "close", "host": self.meta.get("host"), "port": self.meta.get("port"),
                    "bytes_in": self.bytes_in, "bytes_out": self.bytes_out})  # fmt: skip


def make_channel(
    n: int,
    kind: str,
    meta: dict[str, Any],
    dirty: Callable[[Channel], None],
    directory: Path,
    options: Options,
) -> Channel:
    if kind == "forward":
        return ForwardChannel(n, meta, dirty, directory, options.forward_data)
    if kind == "sftp":
        return SftpChannel(n, meta, dirty, directory)
    # scp and rsync never ask for a terminal: a "transfer" with one is someone's shell.
    transfer = transfer_of(meta.get("command")) if kind == "exec" and not meta.get("pty") else None
    if transfer is not None:
        return TransferChannel(n, meta, dirty, directory, transfer, options.transfer_data)
    return TerminalChannel(n, kind, meta, dirty, directory, options.capture_input)
