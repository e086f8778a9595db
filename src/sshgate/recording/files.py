"""Writing a channel's recording files: raw bytes appended as they came, the timing log beside
them, JSON lines for events, each file hashed as it is written (the manifest's SHA-256).

Runs in the recorder's flush thread, one flush at a time. There is nothing to encode: ``hashlib``
and ``os.write`` release the interpreter lock on large buffers, so the relay's event loop keeps
running while a flush hashes and writes. A writer process was measured no faster and no cheaper
(bench/bench_recording.py; docs/recordings.md "Cost").
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from sshgate.recording import direct_io, timing

DROP_BYTES = 8 << 20
DIRECT_BYTES = 256 << 10
COALESCE_S = 0.005
"""Output arriving within this of a timing line's first chunk joins that line: terminals hand
output over in small reads, and players cannot show the difference."""
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700

Item = tuple[float, str, Any]
"""``(monotonic time, code, payload)``: ``o``/``e``/``i`` bytes (output, stderr, input), ``r``
``(cols, rows)``, ``j`` an event dict."""


def write_all(fd: int, data: bytes) -> None:
    """``write`` until all of ``data`` is written."""
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            done += os.write(fd, view[done:])


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700."""
    missing = []
    while not path.is_dir() and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        os.chmod(directory, PRIVATE_DIR)  # mkdir's mode is cut by the umask


def drop_cached(fd: int) -> None:
    """Have the kernel write out a file's cached pages and drop those already written."""
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


class WrittenOnce:
    """A regular file written from start to end for another program to read (an exported
    cast): its cached pages are dropped every ``DROP_BYTES``, as a recording file's are
    (exporting 1 GB of NUL bytes writes 6 GB of ``\\u0000``: half the kernel time, measured)."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._written = self._dropped = 0

    def write(self, data: bytes) -> int:
        self._file.write(data)
        self._written += len(data)
        if self._written - self._dropped >= DROP_BYTES:
            self._file.flush()
            drop_cached(self._file.fileno())
            self._dropped = self._written
        return len(data)


class RecordFile:
    """One append-only file, created 0600 on first use (with ``first_line``) and hashed as written.

    Appends of ``DIRECT_BYTES`` or more go to the disk with ``O_DIRECT`` where the filesystem
    allows it (direct_io.py: the kernel CPU of a buffered write, measured, is what recording
    cost most after the hash); the file then stays open (two descriptors) while it keeps taking
    such appends, since every system call is a round trip for the interpreter lock with a busy
    event loop (docs/recordings.md, "Cost"). Smaller appends open the file, append and close it,
    so an idle session holds no descriptor; every ``DROP_BYTES`` the kernel is asked to write
    out and drop the file's cached pages: a recording is written once and read rarely, and on a
    VM fresh pages cost more kernel time than the writes.
    """

    __slots__ = ("broken", "dropped", "fds", "first_line", "name", "path", "sha256", "size", "tail")

    def __init__(self, path: Path, first_line: bytes = b"") -> None:
        self.path = path
        self.name = path.name
        self.first_line = first_line
        self.sha256 = hashlib.sha256()
        self.size = self.dropped = 0
        self.tail = b""  # the file's last partial block (direct_io.BLOCK): what a direct write redoes
        self.fds: tuple[int, int] | None = None  # (O_DIRECT, plain) while taking direct appends
        self.broken: str | None = None  # a write failed: the digest no longer matches the file

    def append(self, buffers: list[bytes]) -> None:
        """Write ``buffers`` as one block: one hash call and one write per flush (or per
        ``direct_io.STAGING_BYTES``), not per chunk."""
        if not self.size and self.first_line:
            buffers = [self.first_line, *buffers]
        total = sum(map(len, buffers))
        try:
            if total >= DIRECT_BYTES and self.broken is None and direct_io.supported(self.path.parent):
                self._append_direct(buffers)
            else:
                self.close()
                self._append_buffered(buffers)
        except OSError as exc:
            self.broken = exc.strerror or str(exc)
            self.close()
            raise
        self.size += total

    def _append_direct(self, buffers: list[bytes]) -> None:
        if self.fds is None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            plain = os.open(self.path, flags, PRIVATE_FILE)
            try:
                self.fds = (os.open(self.path, flags | direct_io.O_DIRECT), plain)
            except OSError:
                os.close(plain)
                raise
            if not self.size:
                os.fchmod(plain, PRIVATE_FILE)
            if os.fstat(plain).st_size != self.size:  # direct writes go by offset: it must be ours
                raise OSError(errno.EIO, "the file's size does not match what was recorded")
        self.tail = direct_io.append(*self.fds, self.size, self.tail, buffers, self.sha256.update)

    def _append_buffered(self, buffers: list[bytes]) -> None:
        data = buffers[0] if len(buffers) == 1 else b"".join(buffers)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                     PRIVATE_FILE)  # fmt: skip
        try:
            if not self.size and not self.broken:
                os.fchmod(fd, PRIVATE_FILE)
            write_all(fd, data)
            self.sha256.update(data)
            self.tail = direct_io.tail_after(self.tail, data, self.size + len(data))
            if self.size + len(data) - self.dropped >= DROP_BYTES:
                drop_cached(fd)
                self.dropped = self.size + len(data)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the descriptors a run of direct appends left open (the channel ended, or its
        output slowed to small appends)."""
        fds, self.fds = self.fds, None
        for fd in fds or ():
            os.close(fd)

    def digest(self) -> dict[str, Any] | None:
        """The manifest entry, or None when the file must be hashed from disk."""
        if self.broken is not None:
            return None
        return {"sha256": self.sha256.hexdigest(), "size": self.size}


class ChannelFiles:
    """A channel's files and how its items map onto them.

    ``streams`` maps a byte item's code to its data file; with ``timing`` each byte item also
    gets a timing line (``e`` as a STDERR event) and ``r`` items become SIGWINCH events; ``j``
    items go to ``events`` as JSON lines. Items whose code has no file are dropped here.
    """

    def __init__(
        self,
        t0: float,
        streams: dict[str, RecordFile],
        timing_file: RecordFile | None = None,
        events: RecordFile | None = None,
        headers: list[bytes] | None = None,
    ) -> None:
        self.t0 = t0
        self.streams = streams
        self.timing = timing_file
        self.events = events
        self._headers = headers or []
        self._last = t0  # time of the last timing line
        self.created = False

    def files(self) -> list[RecordFile]:
        extra = [f for f in (self.timing, self.events) if f is not None]
        return [*self.streams.values(), *extra]

    def names(self) -> list[str]:
        """The channel's file names; stderr's only once there was some (it is created then)."""
        return [f.name for f in self.files() if f.size or f is not self.streams.get("e")]

    def write(
        self, items: list[Item], closing: list[bytes] | None, on_error: Callable[[RecordFile, str], None]
    ) -> None:
        """Append ``items``; ``closing`` (the last timing headers: DURATION, EXIT_CODE) says this
        is the channel's last write, after which its files are closed."""
        data: dict[str, list[bytes]] = {code: [] for code in self.streams}
        lines, self._headers = self._headers, []  # written once, then not kept
        events: list[bytes] = []
        group: list[Any] | None = None  # [code, first time, bytes] of the timing line being built
        for t, code, value in items:
            if code == "j":
                events.append(
                    json.dumps({"t": round(t - self.t0, 6), **value}, ensure_ascii=False).encode() + b"\n"
                )
                continue
            if code == "r":
                if self.timing is not None:
                    if group:
                        lines.append(self._line(*group))
                        group = None
                    lines.append(timing.resize(t - self._last, *value))
                    self._last = t
                continue
            if code not in data:
                continue
            data[code].append(value)
            if self.timing is None:
                continue
            if group and group[0] == code and t - group[1] < COALESCE_S:
                group[2] += len(value)
                continue
            if group:
                lines.append(self._line(*group))
            group = [code, t, len(value)]
        if group:
            lines.append(self._line(*group))
        lines += closing or []
        targets: list[tuple[RecordFile, list[bytes]]] = [(self.streams[c], d) for c, d in data.items()]
        if self.timing is not None:
            targets.append((self.timing, lines))  # after the bytes it describes
        if self.events is not None:
            targets.append((self.events, events))
        for file, buffers in targets:
            if buffers or (not self.created and file is not self.streams.get("e")):
                try:
                    file.append(buffers)
                except OSError as exc:
                    on_error(file, exc.strerror or str(exc))
        self.created = True
        if closing is not None:
            for file in self.files():
                file.close()

    def _line(self, code: str, t: float, size: int) -> bytes:
        delay, self._last = t - self._last, t
        if code == "e":
            return timing.stderr(delay, size)
        return timing.data("I" if code == "i" else "O", delay, size)
