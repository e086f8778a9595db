"""The recorder's disk thread: writes in the order asked, the flush thread at most one flush
ahead of the disk, and a fixed number of staging buffers in flight."""

from __future__ import annotations

import threading

from sshgate.recording import direct_io
from sshgate.recording.write_behind import STAGING_BUFFERS, WriteBehind


def _blocked(target: object) -> threading.Thread:
    thread = threading.Thread(target=target)  # type: ignore[arg-type]
    thread.start()
    thread.join(0.2)
    return thread


def test_the_flush_thread_stays_one_flush_ahead_of_the_disk() -> None:
    disk = WriteBehind(lambda file, error: None)
    held, done = threading.Event(), []
    try:
        disk.submit(lambda: (held.wait(10), done.append(1)))  # flush 1: the disk is slow
        disk.end_flush()  # nothing before flush 1: the flush thread goes on hashing flush 2
        disk.submit(done.append, 2)
        ending = _blocked(disk.end_flush)
        assert ending.is_alive() and done == []  # flush 2 ends only once flush 1 is on disk
        held.set()
        ending.join(10)
        assert not ending.is_alive()
        disk.drain()
        assert done == [1, 2]  # in the order asked
    finally:
        held.set()
        disk.close()


def test_staging_buffers_are_a_fixed_pool() -> None:
    disk = WriteBehind(lambda file, error: None)
    taken = [disk.staging() for _ in range(STAGING_BUFFERS)]
    assert (
        all(len(b) == direct_io.STAGING_BYTES for b in taken)
        and len({id(b) for b in taken}) == STAGING_BUFFERS
    )
    got: list[object] = []
    waiting = _blocked(lambda: got.append(disk.staging()))
    assert waiting.is_alive() and got == []  # every buffer is still being written: wait
    disk.release(taken[1])
    waiting.join(10)
    assert got == [taken[1]]
    disk.close()
