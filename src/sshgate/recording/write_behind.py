"""The recorder's disk thread: every write of a recording file, in the order it was asked for.

The flush thread copies, hashes and lays out a flush; this thread makes its system calls. A
direct write waits for the disk (about 2 s per GB on this kind of VM, as long as the hash and
copy together), so with one thread doing both a recorded download went no faster than the two
added up; split, the next flush is hashed while this one is on its way to the disk
(docs/recordings.md, "Cost").

One thread and one queue keep the order a file's bytes were written in, across files too: a
channel's output reaches the disk before the timing lines that describe it. The flush thread
stays at most one flush ahead (:meth:`WriteBehind.end_flush`), so a crash loses no more than
it did when the flush thread wrote itself, and memory stays bounded: the staging buffers are a
fixed pool, and a flush that finds them all in flight waits for the disk.
"""

from __future__ import annotations

import mmap
import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sshgate.recording import direct_io

STAGING_BUFFERS = 3
"""Aligned buffers in flight at most: one being filled and hashed, two queued or being written."""


class WriteBehind:
    """A FIFO of file operations run by one thread; ``on_error(owner, message)`` hears of a failed
    write (the operation itself marks its file broken)."""

    def __init__(self, on_error: Callable[[Any, str], None], buffers: int = STAGING_BUFFERS) -> None:
        self.on_error = on_error
        self._executor: ThreadPoolExecutor | None = None
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self._unmade = buffers
        self._last: Future[None] | None = None  # the newest operation
        self._flushed: Future[None] | None = None  # the last operation of the flush before

    def submit(self, operation: Callable[..., None], *args: Any) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="sshgate-recording-disk")
        self._last = self._executor.submit(operation, *args)

    def staging(self) -> mmap.mmap:
        """A free page-aligned buffer of ``direct_io.STAGING_BYTES``; blocks while every buffer
        is waiting to be written. Give it back with :meth:`release` once written."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            if self._unmade:
                self._unmade -= 1
                return mmap.mmap(-1, direct_io.STAGING_BYTES)
            return self._free.get()

    def release(self, buffer: mmap.mmap) -> None:
        self._free.put(buffer)

    def end_flush(self) -> None:
        """Wait until the flush before this one is on disk: the flush thread stays one ahead."""
        if self._flushed is not None:
            self._flushed.result()
        self._flushed = self._last

    def drain(self) -> None:
        """Wait until everything submitted is done (a file is handed on, or a session sealed)."""
        if self._last is not None:
            self._last.result()
        self._flushed = None

    def close(self) -> None:
        """Finish what is queued and stop the thread (the next submit starts another)."""
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
        self._last = self._flushed = None
