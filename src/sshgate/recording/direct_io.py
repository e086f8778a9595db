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
from collections.abc import Callable
from pathlib import Path

BLOCK = 4096
"""Alignment for buffers, offsets and lengths: every Linux filesystem's direct I/O accepts it."""
STAGING_BYTES = 4 << 20
"""The size of an aligned buffer a flush is copied into (write_behind.py keeps a few)."""

O_DIRECT = getattr(os, "O_DIRECT", 0)
_supported: dict[int, bool] = {}


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
    size: int,
    tail: bytes,
    buffers: list[bytes],
    hash_update: Callable[[memoryview], object],
    staging: Callable[[], mmap.mmap],
    write: Callable[[mmap.mmap, int, int], None],
) -> bytes:
    """Lay out ``buffers``, appended to a file that holds ``size`` bytes ending in ``tail`` (its
    last partial block, already hashed), in aligned buffers from ``staging``. The new bytes go to
    ``hash_update`` in pieces of up to ``STAGING_BYTES``; each buffer goes to ``write(buffer,
    length, offset)``, whose first ``length`` bytes (whole blocks) belong at ``offset``, and which
    hands it back once written. Returns the new tail, which the caller writes the ordinary way at
    the file's new size less its length."""
    offset = size - len(tail)
    buffer = staging()
    view = memoryview(buffer)
    view[: len(tail)] = tail
    filled = hashed = len(tail)
    for chunk in buffers:
        with memoryview(chunk) as data:
            taken = 0
            while taken < len(data):
                n = min(len(data) - taken, STAGING_BYTES - filled)
                view[filled : filled + n] = data[taken : taken + n]
                filled += n
                taken += n
                if filled == STAGING_BYTES:
                    hash_update(view[hashed:filled])
                    view.release()
                    write(buffer, filled, offset)
                    offset += filled
                    buffer = staging()
                    view = memoryview(buffer)
                    filled = hashed = 0
    hash_update(view[hashed:filled])
    whole = filled - filled % BLOCK
    new_tail = bytes(view[whole:filled])
    view.release()
    write(buffer, whole, offset)
    return new_tail
