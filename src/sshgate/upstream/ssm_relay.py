"""Adapting pull-style SSM sessions (``await read()`` / ``await write()``) to the relay's
push-style :class:`UpstreamChannel`, with bounded buffering in both directions."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shlex
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from sshgate.upstream.base import Downstream

Chunk = tuple[bytes, bool]  # data, is it stderr
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
_ITEM_COST = 64  # what a queued item costs besides its bytes
SIGNAL_BYTES = {"INT": b"\x03", "QUIT": b"\x1c", "TSTP": b"\x1a"}


class _NewSize:
    """In the queue: a window size, updated in place while nothing was queued after it."""

    __slots__ = ("cols", "rows")

    def __init__(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows


class SessionPump:
    """One SSM stream relayed to one client channel.

    ``read`` returns the next chunk or None at the end; ``finish`` gives the exit status (or None)
    once reading ended; ``on_eof`` runs when the client sends EOF (after queued writes);
    ``signals`` maps the signals the client may send to the bytes that stand for them in-band;
    ``missing_status`` is told to the client on stderr when a session that owes an exit status
    ends without one (the agent closed before its last output: that output is lost too);
    ``broken`` says, once reading ended, whether the session was ended for a fault: then its
    ``(line, reason)`` replaces all that, the line told to the client on stderr, the reason
    passed on as the channel's upstream error (the audit log's).

    Without task hops (an echoed keystroke crossed two per direction): ``write_now`` sends the
    client's data in the SSH data callback when nothing is queued before it and the session need
    not wait (else the writer task takes it, in order), and the session may hand output to
    :meth:`offer` as it arrives.
    """

    def __init__(
        self,
        downstream: Downstream,
        read: Callable[[], Awaitable[Chunk | None]],
        write: Callable[[bytes], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
        finish: Callable[[], int | None] = lambda: None,
        on_eof: Callable[[], Awaitable[None]] | None = None,
        resize: Callable[[int, int], Coroutine[Any, Any, None]] | None = None,
        *,
        signals: Mapping[str, bytes] = SIGNAL_BYTES,
        missing_status: bytes | None = None,
        broken: Callable[[], tuple[bytes, str] | None] = lambda: None,
        write_now: Callable[[bytes], bool] | None = None,
    ) -> None:
        self._down = downstream
        self._missing_status = missing_status
        self._broken = broken
        self._signals = signals
        self._read = read
        self._write = write
        self._write_now = write_now
        self._close = close
        self._finish = finish
        self._on_eof = on_eof
        self._resize = resize
        self._may_read = asyncio.Event()
        self._may_read.set()
        # Data and window sizes share one queue: the agent gets them in the client's order.
        self._queue: asyncio.Queue[bytes | _NewSize | None] = asyncio.Queue()
        self._last_size: _NewSize | None = None  # a size that is the last item queued
        self._queued = 0
        self._backlog = 0  # items put in the queue and not yet done with by the writer
        self._client_paused = False
        self._closed = False
        self._ended = False  # the client channel was told how the session ended
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._reader()), loop.create_task(self._writer())]

    async def _reader(self) -> None:
        error: str | None = None
        try:
            while True:
                await self._may_read.wait()
                chunk = await self._read()
                if chunk is None:
                    break
                if chunk[0]:
                    self._down.upstream_data(*chunk)
        except Exception as exc:  # reported to the client channel, which then closes
            error = str(exc) or type(exc).__name__
        self._end(error)

    def _end(self, error: str | None) -> None:
        if self._ended:
            return
        self._ended = True
        if error is None and (broken := self._broken()) is not None:
            line, error = broken
            self._down.upstream_data(line, True)
        if error is None:
            status = self._finish()
            if status is None and self._missing_status is not None:
                self._down.upstream_data(self._missing_status, True)
            self._down.upstream_eof()
            self._down.upstream_exit(status, None)
        self._down.upstream_closed(error)
        self._tasks[1].cancel()

    async def _writer(self) -> None:
        while (data := await self._queue.get()) is not None:
            self._queued -= _ITEM_COST + (len(data) if isinstance(data, bytes) else 0)
            if self._client_paused and self._queued < _LOW_WATER:
                self._client_paused = False
                self._down.resume_reading()
            if isinstance(data, _NewSize):
                if data is self._last_size:
                    self._last_size = None
                if self._resize is not None:
                    await self._resize(data.cols, data.rows)
            else:
                await self._write(data)
            self._backlog -= 1
        if self._on_eof is not None:
            await self._on_eof()


    def write(self, data: bytes) -> None:
        if not self._backlog and self._write_now is not None and self._write_now(data):
            return
        self._put(data)

    def _put(self, item: bytes | _NewSize | None) -> None:
        """Queue ``item``, charged its bytes and ``_ITEM_COST`` towards pausing the client: sizes
        between 1-byte writes would otherwise queue half a million items under the high water."""
        self._backlog += 1
        self._last_size = item if isinstance(item, _NewSize) else None
        self._queue.put_nowait(item)
        self._queued += _ITEM_COST + (len(item) if isinstance(item, bytes) else 0)
        if not self._client_paused and self._queued > _HIGH_WATER:
            self._client_paused = True
            self._down.pause_reading()

    def write_eof(self) -> None:
        self._put(None)

    def resize(self, cols: int, rows: int, width: int, height: int) -> None:
        """Queue the new size; one not yet sent is replaced, not added to: window changes are
        outside SSH flow control, so a client could otherwise queue them without end."""
        if self._resize is None:
            return
        last = self._last_size
        if last is not None:  # the newest item queued, not yet sent: nothing to keep in order
            last.cols, last.rows = cols, rows
            return
        self._put(_NewSize(cols, rows))

    def offer(self, chunk: Chunk) -> bool:
        """Pass output on now, in the caller's callback, unless reading is paused or over;
        False: the caller keeps it for ``read``."""
        if not self._may_read.is_set() or self._closed or self._ended:
            return False
        try:
            if chunk[0]:
                self._down.upstream_data(*chunk)
        except Exception as exc:  # as in the reader task: the client's side failed, not the agent
            self._tasks[0].cancel()
            self._end(str(exc) or type(exc).__name__)
        return True

    def send_signal(self, name: str) -> None:
        if name in self._signals:
            SessionPump.write(self, self._signals[name])

    def pause_reading(self) -> None:
        self._may_read.clear()

    def resume_reading(self) -> None:
        self._may_read.set()

    def close(self) -> None:
        """Stop both directions and close the SSM side once, however the reader ended.

        A reader that stopped on an error has not closed its stream; an unread mux stream would
        hold the whole port session's receive budget and stall every other stream on it.
        """
        for task in self._tasks:
            task.cancel()
        if not self._closed:
            self._closed = True
            asyncio.get_running_loop().create_task(self._quiet_close())

    async def _quiet_close(self) -> None:
        with contextlib.suppress(Exception):
            await self._close()


class StdinlessPump(SessionPump):
    """A NonInteractiveCommands session: the agent gives the command no stdin, and it reads any
    0x03 or 0x1c in the input as SIGINT or SIGQUIT for the command. So the client's data is not
    sent at all (piped binary data would interrupt the command at random); the client is told
    once, on stderr, with ``notice``. Signals still go through."""

    def __init__(self, notice: bytes, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._notice: bytes | None = notice

    def write(self, data: bytes) -> None:
        if data and self._notice is not None:
            self._down.upstream_data(self._notice, True)
            self._notice = None


class ExitMarker:
    """Recover an exit status from an interactive stream, where SSM carries none (ECS exec).

    The command is wrapped to print a random marker and ``$?`` last; output is passed on as it
    comes, except a tail that could be the start of the marker, held until it cannot be.
    """

    def __init__(self) -> None:
        self.marker = f"__sshgate_exit_{secrets.token_hex(8)}__".encode()
        self._tail = b""
        self.status: int | None = None

    def wrap(self, command: str) -> str:
        inner = f"stty raw -echo 2>/dev/null; {command}; printf '%s%d\\n' {self.marker.decode()} $?"
        return "/bin/sh -c " + shlex.quote(inner)

    def feed(self, data: bytes) -> bytes:
        if self.status is not None:
            return b""  # the marker line was the command's last output
        buf = self._tail + data
        found = buf.find(self.marker)
        if found >= 0:
            line, newline, _ = buf[found + len(self.marker) :].partition(b"\n")
            if not newline:
                self._tail = buf[found:]  # wait for the whole status line
                return buf[:found]
            self._tail = b""
            if line.strip().isdigit():
                self.status = int(line.strip())
                return buf[:found]
            return buf
        keep = _prefix_overlap(buf, self.marker)
        self._tail = buf[len(buf) - keep :] if keep else b""
        return buf[: len(buf) - keep]

    def flush(self) -> bytes:
        tail, self._tail = self._tail, b""
        return tail if self.status is None else b""


class PipedShell:
    """A byte-clean shell without a terminal, over an SSM session that only offers a pty
    (InteractiveCommands; NonInteractiveCommands gives a command no stdin at all).

    ``command`` (run as ``sh -c`` by the agent) puts the pty in raw mode without echo or output
    processing, then runs ``program`` with a pipe for stdin, fed by ``cat`` from the terminal, so
    the program sees no terminal on stdin (no prompt, no line editing). Input sent before ``stty``
    ran would be echoed and edited by the cooked terminal, so the wrapper prints ``ready`` first
    and the gateway sends nothing until it has seen it. A raw terminal has no end of file, so the
    client's EOF travels as a resize to ``EOF_SIZE``, which nothing else sends on such a session:
    the reader's SIGWINCH trap makes terminal reads non-blocking and restarts cat's pending read
    (SIGSTOP, SIGCONT), so cat drains what is queued, reads end of file and the program's stdin
    closes. The program's exit status comes back through an :class:`ExitMarker`.
    """

    EOF_SIZE = (1, 1)  # cols, rows

    def __init__(self, program: str) -> None:
        self.ready = f"__sshgate_ready_{secrets.token_hex(8)}__".encode()
        self.exit = ExitMarker()
        cols, rows = self.EOF_SIZE
        # Silent: the trap's output would be the program's (cat may already have ended by then).
        on_eof = (
            f'{{ [ "$(stty size <&3)" = "{rows} {cols}" ] && stty min 0 time 0 <&3'
            " && kill -STOP $c && kill -CONT $c; } 2>/dev/null"
        )
        reader = (
            f"trap {shlex.quote(on_eof)} WINCH; cat <&3 & c=$!; printf %s {self.ready.decode()} >&2; "
            "while kill -0 $c 2>/dev/null; do wait $c; done"
        )
        self.command = self.exit.wrap(f"exec 3<&0; {{ {reader}; }} | {program} 3<&- & wait $!")

    async def wait_ready(self, read: Callable[[], Awaitable[bytes]]) -> bytes:
        """Read up to the ready marker; returns the program's output so far, around the marker
        (the program starts beside the reader that prints it, so it may print first)."""
        seen = b""
        while (found := seen.find(self.ready)) < 0:
            data = await read()
            if not data:
                raise ConnectionError(f"the session ended before the shell started: {seen[-200:]!r}")
            seen += data
        return seen[:found] + seen[found + len(self.ready) :]


def _prefix_overlap(buf: bytes, marker: bytes) -> int:
    """Length of the longest suffix of ``buf`` that is a prefix of ``marker``."""
    for size in range(min(len(buf), len(marker) - 1), 0, -1):
        if buf.endswith(marker[:size]):
            return size
    return 0
