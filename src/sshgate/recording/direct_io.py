"""Appending large blocks of a recording with ``O_DIRECT``: the disk's DMA moves the bytes, not the CPU.

A buffered write costs the gateway 0.24 to 0.9 s of kernel CPU per GB on this kind of VM (page
allocation, dirty accounting, reclaim when the cache is full: it varies with the cache's state);
a direct write of the same bytes from an aligned buffer costs 0.24 s/GB including the copy into
that buffer, every time, and leaves the page cache to programs that read (docs/recordings.md,
"Cost"). The bytes are on the disk when the call returns, which also narrows what a crash loses.

Direct I/O moves whole blocks at aligned offsets, so a file's last partial block (its *tail*)
is kept in memory by the caller, written with an ordinary write (on disk within a flush, as
before) and written again, completed, by the next direct write. Filesystems that are not on a
block device, or whose probe fails, get ordinary writes (:func:`supported`).
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Callable
from pathlib import Path

BLOCK = 4096
"""Alignment for buffers, offsets and lengths: every Linux filesystem's direct I/O accepts it."""
STAGING_BYTES = 4 << 20
"""The aligned buffer one thread copies into (one per writing thread, allocated on first use)."""

O_DIRECT = getattr(os, "O_DIRECT", 0)
_supported: dict[int, bool] = {}
_local = threading.local()


def supported(directory: Path) -> bool:
    """Whether ``directory``'s filesystem takes aligned direct writes (probed once per device).

    Only filesystems on a block device qualify: on NFS (EFS), FUSE or SMB a direct write is a
    synchronous round trip to a server, and tmpfs or overlay gain nothing from it; those have
    device numbers without a major (as do btrfs subvolumes, which keep buffered writes)."""
    if not O_DIRECT:
        return False
    device = os.stat(directory).st_dev
    if device not in _supported:
        _supported[device] = os.major(device) != 0 and _probe(directory)
    return _supported[device]


def _probe(directory: Path) -> bool:
    """One aligned block written to an unnamed file (``O_TMPFILE``: nothing to leave behind)."""
    try:
        fd = os.open(directory, os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC | O_DIRECT, 0o600)
    except OSError:
        return False
    try:
        with mmap.mmap(-1, BLOCK) as block:
            return os.pwrite(fd, block, 0) == BLOCK
    except OSError:
        return False
    finally:
        os.close(fd)


def _staging() -> mmap.mmap:
    buffer: mmap.mmap | None = getattr(_local, "staging", None)
    if buffer is None:
        buffer = _local.staging = mmap.mmap(-1, STAGING_BYTES)  # page-aligned
    return buffer


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """``pwrite`` until all of ``data`` is written at ``offset``."""
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)


def tail_after(tail: bytes, data: bytes, size: int) -> bytes:
    """The last partial block of a file that was ``tail`` at its end and is ``size`` bytes after
    ``data`` was appended."""
    keep = size % BLOCK
    if keep <= len(data):
        return data[len(data) - keep :] if keep else b""
    return tail + data


def append(
    fd: int,
    plain_fd: int,
    size: int,
    tail: bytes,
    buffers: list[bytes],
    hash_update: Callable[[memoryview], object],
) -> bytes:
    """Append ``buffers`` to the file open at ``fd`` with ``O_DIRECT`` (and at ``plain_fd``
    without), which holds ``size`` bytes ending in ``tail`` (its last partial block, already on
    disk and hashed). The new bytes go to ``hash_update`` in pieces of up to ``STAGING_BYTES``;
    the new tail, returned, is written through ``plain_fd``."""
    offset = size - len(tail)
    staging = _staging()
    with memoryview(staging) as view:
        staging[: len(tail)] = tail
        filled = hashed = len(tail)
        for buffer in buffers:
            with memoryview(buffer) as data:
                taken = 0
                while taken < len(data):
                    n = min(len(data) - taken, STAGING_BYTES - filled)
                    view[filled : filled + n] = data[taken : taken + n]
                    filled += n
                    taken += n
                    if filled == STAGING_BYTES:
                        hash_update(view[hashed:filled])
                        pwrite_all(fd, view[:filled], offset)
                        offset += filled
                        filled = hashed = 0
        hash_update(view[hashed:filled])
        whole = filled - filled % BLOCK
        if whole:
            pwrite_all(fd, view[:whole], offset)
        new_tail = bytes(view[whole:filled])
    if new_tail:
        pwrite_all(plain_fd, new_tail, offset + whole)
    return new_tail
