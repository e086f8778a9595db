"""Recording files written with and without O_DIRECT: byte-exact, hashed as written, 0600."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from sshgate.recording import direct_io, files
from sshgate.recording.files import RecordFile

BLOCK = direct_io.BLOCK


@pytest.mark.parametrize(
    ("tail", "data", "size", "expected"),
    [
        (b"", b"", 0, b""),
        (b"", b"x" * BLOCK, BLOCK, b""),
        (b"ab", b"cd", 4, b"abcd"),  # no block boundary crossed: the old tail grows
        (b"a" * (BLOCK - 1), b"bc", BLOCK + 1, b"c"),  # crossed: the tail starts in the new data
        (b"", b"y" * (3 * BLOCK + 5), 3 * BLOCK + 5, b"y" * 5),
    ],
)
def test_tail_after(tail: bytes, data: bytes, size: int, expected: bytes) -> None:
    assert direct_io.tail_after(tail, data, size) == expected


def _pieces() -> list[list[bytes]]:
    """Appends of every shape: tiny, block-sized, straddling blocks, above the direct threshold,
    and one larger than the staging buffer (written in several direct writes)."""
    rnd = os.urandom(direct_io.STAGING_BYTES * 2 + 12345)
    sizes = [[1], [BLOCK - 1], [BLOCK + 3], [files.DIRECT_BYTES + 7], [5, 6], [32768] * 9,
             [files.DIRECT_BYTES, 1, BLOCK], [direct_io.STAGING_BYTES + 999, 32768 * 3], [17]]  # fmt: skip
    out, at = [], 0
    for shape in sizes:
        batch = []
        for n in shape:
            batch.append(rnd[at % len(rnd) : at % len(rnd) + n].ljust(n, b"z"))
            at += n
        out.append(batch)
    return out


def _append_all(path: Path) -> tuple[RecordFile, bytes]:
    descriptors = len(os.listdir("/proc/self/fd"))
    record = RecordFile(path, b"Script started\n")
    written = bytearray(b"Script started\n")
    for batch in _pieces():
        record.append(batch)
        written += b"".join(batch)
        assert path.stat().st_size == len(written) == record.size  # on disk after every flush
        assert len(record.tail) == record.size % BLOCK
    record.close()
    assert len(os.listdir("/proc/self/fd")) == descriptors  # nothing left open
    return record, bytes(written)


def _spy_open_flags(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    opened: list[int] = []
    real_open = os.open
    monkeypatch.setattr(
        os, "open", lambda path, flags, *a: opened.append(flags) or real_open(path, flags, *a)
    )
    return opened


def test_large_appends_go_direct_and_stay_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert direct_io.supported(tmp_path), "the test machine's disk takes O_DIRECT (ext4)"
    opened = _spy_open_flags(monkeypatch)
    record, written = _append_all(tmp_path / "1-exec.out")
    # Two runs of appends >= DIRECT_BYTES, each opening the file once with O_DIRECT (and once
    # without, for the tail); the small appends between and after them close those descriptors.
    direct = [bool(flags & direct_io.O_DIRECT) for flags in opened]
    assert direct.count(True) == 2 and direct.count(False) == 5 + 2
    assert record.fds is None
    assert (tmp_path / "1-exec.out").read_bytes() == written
    assert record.digest() == {"sha256": hashlib.sha256(written).hexdigest(), "size": len(written)}
    assert stat.S_IMODE((tmp_path / "1-exec.out").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1-exec.out"]  # the probe left nothing


def test_filesystems_without_a_block_device_get_buffered_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """tmpfs (as NFS, FUSE or overlay) has no block device behind it: it keeps buffered writes,
    byte-exact, with or without large appends."""
    shm = Path("/dev/shm")
    assert os.major(shm.stat().st_dev) == 0 and not direct_io.supported(shm)
    directory = shm / f"sshgate-test-{os.getpid()}"
    directory.mkdir()
    try:
        opened = _spy_open_flags(monkeypatch)
        record, written = _append_all(directory / "1-exec.out")
        assert (directory / "1-exec.out").read_bytes() == written
        assert record.digest() == {"sha256": hashlib.sha256(written).hexdigest(), "size": len(written)}
        assert opened and not any(flags & direct_io.O_DIRECT for flags in opened)
    finally:
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()


def test_probe_refuses_what_cannot_be_opened(tmp_path: Path) -> None:
    assert not direct_io._probe(tmp_path / "missing")


def test_a_file_changed_behind_the_recorder_is_marked_broken(tmp_path: Path) -> None:
    """A direct write re-writes the last partial block at an offset from what was recorded: if
    the file is not what the recorder wrote, it must not write there but say so."""
    path = tmp_path / "1-exec.out"
    record = RecordFile(path)
    record.append([b"a" * (BLOCK + 10)])
    with path.open("ab") as other:
        other.write(b"tampered")
    with pytest.raises(OSError, match="size"):
        record.append([b"b" * files.DIRECT_BYTES])
    assert record.digest() is None  # the manifest hashes it from disk instead
    assert path.read_bytes() == b"a" * (BLOCK + 10) + b"tampered"
