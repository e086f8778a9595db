"""The recording writer process: turns what channels buffered into file lines and appends them.

Recording costs more CPU than relaying: per GB of ``yes`` output, JSON escaping 1.4 s, the
manifest's SHA-256 of the 1.5 GB cast 0.8 s, writing it 0.5 s, against about 1.8 s for the
relay. In a thread that work held the GIL the relay's event loop needs; a process of its own
runs it on another core, and the gateway only hands it raw bytes. Each recorder flush is one
request, answered once the files are written, so a finished flush still means the data is in
the files.

Each request's byte payloads are copied, in order, into memory both processes map (a memfd);
pipes carry only frames: a 16-byte header (meta length, payload length) and pickled meta. A
request's meta is a list of operations on channel files (see :func:`apply`); the reply's is the
files that could not be written and the digests of the files closed. The process exits at end
of input, that is when the gateway closes the pipe or dies, after finishing the request at hand.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import mmap
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from json.encoder import encode_basestring
from typing import Any

_HEADER = struct.Struct("<QQ")
_IOV_MAX = 1024
SHARED_BYTES = 16 << 20
"""First size of the shared payload memory; it grows to the largest request."""
WRITE_BYTES = 1 << 20
DROP_BYTES = 8 << 20
MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": str(64 << 20), "MALLOC_MMAP_THRESHOLD_": str(16 << 20)}
"""glibc keeps freed heap instead of returning it at once: each event's strings are tens of KB,
and by default the writer faulted fresh pages in for every one (a page fault per 4 KB written,
0.6 s of kernel time per GB of output)."""

Op = tuple[str, str, Any, Any]
"""``(code, path, a, b)``: ``open`` (header bytes, format), ``close``, or an item ``(t, value)``."""
Reply = tuple[list[tuple[str, str]], dict[str, dict[str, Any]]]
"""Files that failed, ``(path, error)``, and the digests of the files closed."""


class WriterGone(Exception):
    """The writer process died or could not be reached; the request's data was not written."""


def _write_all(fd: int, buffers: list[bytes]) -> None:
    """``writev`` until every buffer is written (a pipe may take part of one)."""
    views = [memoryview(b) for b in buffers if b]
    while views:
        done = os.writev(fd, views[:_IOV_MAX])
        while views and done >= len(views[0]):
            done -= len(views.pop(0))
        if done:
            views[0] = views[0][done:]


def _read_exactly(fd: int, size: int) -> bytearray | None:
    """``size`` bytes, or None at end of input before the first byte."""
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            if got == 0:
                return None
            raise EOFError("truncated frame")
        got += n
    return buf


def send_frame(fd: int, meta: object, size: int = 0) -> None:
    encoded = pickle.dumps(meta, protocol=pickle.HIGHEST_PROTOCOL)
    _write_all(fd, [_HEADER.pack(len(encoded), size), encoded])


def recv_frame(fd: int) -> tuple[Any, int] | None:
    """The meta and payload length of the next frame, or None at end of input."""
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    meta_size, size = _HEADER.unpack(header)
    meta = _read_exactly(fd, meta_size)
    if meta is None:
        raise EOFError("truncated frame")
    return pickle.loads(meta), size  # noqa: S301 - from our own parent process


def _map(fd: int) -> mmap.mmap:
    return mmap.mmap(fd, os.fstat(fd).st_size)


class WriterProcess:
    """The gateway's handle on its writer process; :meth:`request` blocks, so call it in a thread."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._memfd = -1
        self._shared: mmap.mmap | None = None

    def start(self) -> None:
        """Start the process unless started (raises OSError if it cannot be): one that died is
        found by the next request, which says so."""
        if self._proc is not None:
            return
        if self._shared is None:
            self._memfd = os.memfd_create("sshgate-recording", os.MFD_CLOEXEC)
            self._grow(SHARED_BYTES)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "sshgate.recording.writer", str(self._memfd)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=(self._memfd,),
            env={**os.environ, **MALLOC_ENV},
        )

    def _grow(self, size: int) -> None:
        """Resize the shared memory (the process maps it anew when a request needs more)."""
        os.ftruncate(self._memfd, size)
        if self._shared is not None:
            self._shared.close()
        self._shared = _map(self._memfd)

    def request(self, ops: list[Op], data: list[bytes]) -> Reply:
        """Apply ``ops`` (see :func:`apply`) with ``data``, their payloads. Raises :class:`WriterGone`."""
        try:
            self.start()
            proc, shared = self._proc, self._shared
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            size = sum(len(b) for b in data)
            if shared is None or size > len(shared):
                self._grow(1 << (size - 1).bit_length())
                shared = self._shared
            assert shared is not None
            offset = 0
            for b in data:
                shared[offset : offset + len(b)] = b
                offset += len(b)
            send_frame(proc.stdin.fileno(), ops, size)
            reply = recv_frame(proc.stdout.fileno())
            if reply is None:
                raise EOFError("closed its output")
        except (OSError, EOFError) as exc:
            raise WriterGone(f"{exc}; {self._stop(kill=True)}") from None
        answer: Reply = reply[0]
        return answer

    def close(self, timeout: float = 10.0) -> None:
        """End of input: the process finishes what it holds and exits."""
        self._stop(kill=False, timeout=timeout)
        if self._shared is not None:
            self._shared.close()
            os.close(self._memfd)
            self._shared = None

    def _stop(self, kill: bool, timeout: float = 10.0) -> str:
        """Stop the process; returns how it ended."""
        proc, self._proc = self._proc, None
        if proc is None:
            return "writer process not running"
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        status = proc.poll()
        if status is None and kill:
            proc.kill()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return "writer process killed" if status is None else f"writer process exited with status {status}"


class CastEncoder:
    """asciicast v2 event lines; bytes that are not UTF-8 become U+FFFD, as a terminal shows them."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self._decoders = {
            "o": codecs.getincrementaldecoder("utf-8")("replace"),
            "i": codecs.getincrementaldecoder("utf-8")("replace"),
        }

    def add(self, out: list[bytes], t: float, code: str, value: Any) -> None:
        self._event(out, t, code, value if code == "r" else self._decoders[code].decode(value))

    def end(self, out: list[bytes]) -> None:
        """A character cut short by the end of the channel."""
        now = time.monotonic()
        for code, decoder in self._decoders.items():
            self._event(out, now, code, decoder.decode(b"", final=True))

    def _event(self, out: list[bytes], t: float, code: str, text: str) -> None:
        if text:  # three pieces: the escaped text, the bulk, is not copied into a line
            out += (f'[{t - self.t0:.6f}, "{code}", '.encode(), encode_basestring(text).encode(), b"]\n")


class LinesEncoder:
    """JSON lines: each event with its time since the channel opened."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0

    def add(self, out: list[bytes], t: float, code: str, value: Any) -> None:
        out.append(json.dumps({"t": round(t - self.t0, 6), **value}, ensure_ascii=False).encode() + b"\n")

    def end(self, out: list[bytes]) -> None:
        pass


_ENCODERS: dict[str, type[CastEncoder] | type[LinesEncoder]] = {"cast": CastEncoder, "lines": LinesEncoder}


class _File:
    """One open channel file. Every ``DROP_BYTES`` it asks the kernel to write out and drop what
    it holds of the file: a recording is written once and read rarely, and a bulk session's GBs
    in the page cache would only push out what the host needs (on a VM, fresh pages for them also
    cost more kernel time than the writes: measured 0.3-2.6 s per GB)."""

    def __init__(self, path: str, header: bytes, fmt: str, t0: float) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
        self.size = self.dropped = os.fstat(self.fd).st_size
        self.sha256 = hashlib.sha256()
        if self.size:  # a writer before this one died: the digest covers what it wrote
            with open(path, "rb") as f:
                self.sha256 = hashlib.file_digest(f, "sha256")
        self.pending: list[bytes] = [] if self.size else [header]
        self.held = 0  # payload bytes behind ``pending``
        self.encoder: CastEncoder | LinesEncoder = _ENCODERS[fmt](t0)

    def add(self, t: float, code: str, value: Any) -> None:
        """Encode one item; written out every ``WRITE_BYTES`` of payload, so however big a
        request is, the writer holds little of it (and glibc's kept heap covers that)."""
        self.encoder.add(self.pending, t, code, value)
        if isinstance(value, memoryview):
            self.held += len(value)
            if self.held >= WRITE_BYTES:
                self.write()

    def write(self) -> None:
        self.held = 0
        if self.pending:
            _write_all(self.fd, self.pending)
            for piece in self.pending:
                self.sha256.update(piece)
                self.size += len(piece)
            self.pending.clear()
        if self.size - self.dropped >= DROP_BYTES:
            os.posix_fadvise(self.fd, 0, self.size, os.POSIX_FADV_DONTNEED)
            self.dropped = self.size

    def close(self) -> dict[str, Any]:
        """The file's digest, as the manifest records it."""
        os.close(self.fd)
        return {"sha256": self.sha256.hexdigest(), "size": self.size}


def apply(files: dict[str, _File], ops: list[Op], data: memoryview) -> Reply:
    """Run one request against the open ``files``; returns ``(path, error)`` for each failed file
    and the digest of each file closed.

    ``("open", path, header, (format, t0))`` opens a file unless it is open (the header goes
    into an empty file only); ``(code, path, t, value)`` adds one item, where an int value is the
    length of the next byte payload in ``data``; ``("close", path, None, None)`` ends the file.
    """
    failed: dict[str, str] = {}
    digests: dict[str, dict[str, Any]] = {}
    offset = 0
    touched: list[str] = []
    for code, path, a, b in ops:
        value = b
        if isinstance(b, int):
            value, offset = data[offset : offset + b], offset + b
        if path in failed:
            continue
        try:
            if code == "open":
                if path not in files:
                    files[path] = _File(path, a, *value)
                touched.append(path)
            elif code == "close":
                file = files[path]
                file.encoder.end(file.pending)
                file.write()
                del files[path]
                digests[path] = file.close()
            else:
                files[path].add(a, code, value)
        except OSError as exc:
            failed[path] = exc.strerror or str(exc)
            with contextlib.suppress(KeyError, OSError):
                files.pop(path).close()
    for path in touched:
        if path in files and path not in failed:
            try:
                files[path].write()
            except OSError as exc:
                failed[path] = exc.strerror or str(exc)
    return list(failed.items()), digests


def main() -> None:
    """Serve requests on stdin until it ends; signals meant for the gateway's group are its to act on."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    memfd = int(sys.argv[1])
    shared = _map(memfd)
    files: dict[str, _File] = {}
    with contextlib.suppress(BrokenPipeError):  # the gateway is gone: nobody to answer
        while (frame := recv_frame(0)) is not None:
            ops, size = frame
            if size > len(shared):
                shared.close()
                shared = _map(memfd)
            with memoryview(shared) as view:
                reply = apply(files, ops, view[:size])
            send_frame(1, reply)
    for file in files.values():
        file.write()
        file.close()


if __name__ == "__main__":
    main()
