"""Where a recorded session's files are read from: a local directory (the recordings directory,
or the S3 sink's spool) or S3, behind one small interface.

Every name is checked before it becomes a path or a key: a day is ``YYYY-MM-DD``, a session id
matches the recorder's format, a file name is one plain component. Local files are opened
component by component from the recordings directory with ``O_NOFOLLOW`` and must be regular
files, so neither a symlink nor a FIFO planted in a session directory leads anywhere.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from sshgate.recording.recorder import SESSION_ID, RecordingError

DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class SessionFiles(Protocol):
    """The files of one session directory."""

    @property
    def where(self) -> str:
        """The directory or S3 URL, for people."""
        ...

    def open(self, name: str) -> BinaryIO:
        """A file for reading in order; :class:`FileNotFoundError` when it does not exist."""
        ...

    def names(self) -> list[str]:
        """Every entry's name (sorted)."""
        ...


def check_parts(day: str, session_id: str) -> None:
    if not (DAY.fullmatch(day) and SESSION_ID.fullmatch(session_id)):
        raise RecordingError(f"not a recording: {day}/{session_id}")


def _check_name(name: str) -> None:
    if not FILE_NAME.fullmatch(name):
        raise RecordingError(f"not a recording file name: {name!r}")


@dataclass(frozen=True, slots=True)
class LocalFiles:
    """The directory ``base/parts...``; ``base`` is trusted, each part is opened with
    ``O_NOFOLLOW``, and so is every file: a symlink leads nowhere."""

    base: Path
    parts: tuple[str, ...] = ()

    @classmethod
    def session(cls, root: Path, day: str, session_id: str) -> LocalFiles:
        check_parts(day, session_id)
        return cls(root, (day, session_id))

    @property
    def where(self) -> str:
        return str(self.base.joinpath(*self.parts))

    @contextlib.contextmanager
    def _directory(self) -> Iterator[int]:
        fd = os.open(self.base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in self.parts:
                inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = inner
            yield fd
        finally:
            os.close(fd)

    def open(self, name: str) -> BinaryIO:
        _check_name(name)
        try:
            with self._directory() as directory:
                fd = os.open(name, _FILE_FLAGS, dir_fd=directory)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise RecordingError(f"{self.where}/{name}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RecordingError(f"{self.where}/{name}: not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def names(self) -> list[str]:
        try:
            with self._directory() as directory:
                return sorted(os.listdir(directory))
        except OSError as exc:
            raise RecordingError(f"{self.where}: {exc.strerror or exc}") from None


def stamp_of(st: os.stat_result) -> tuple[int, int, int]:
    """Inode, mtime and size: what tells that a file was replaced or rewritten."""
    return st.st_ino, st.st_mtime_ns, st.st_size


class _BodyReader(io.RawIOBase):
    """An S3 object's streaming body as a raw file, so it buffers and reads lines like one."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


@dataclass(frozen=True, slots=True)
class S3Files:
    """``prefix + day/session_id/`` in ``bucket``; bodies stream, nothing is held whole."""

    client: Callable[[], Any]
    bucket: str
    prefix: str
    day: str
    session_id: str

    @property
    def key(self) -> str:
        check_parts(self.day, self.session_id)
        return f"{self.prefix}{self.day}/{self.session_id}/"

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.key}".rstrip("/")

    def open(self, name: str) -> BinaryIO:
        _check_name(name)
        key = self.key + name
        client = self.client()
        try:
            body = client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"{self.where}/{name}") from None
        except Exception as exc:  # botocore raises many types; each is a read failure
            raise RecordingError(f"{self.where}/{name}: {exc}") from None
        return io.BufferedReader(_BodyReader(body), 256 << 10)

    def names(self) -> list[str]:
        return sorted(key[len(self.key) :] for key, _ in list_objects(self.client, self.bucket, self.key))


def list_objects(
    client: Callable[[], Any], bucket: str, prefix: str, start_after: str = ""
) -> Iterator[tuple[str, str]]:
    """Every key under ``prefix`` (after ``start_after``, if given) with its ETag."""
    after = {"StartAfter": start_after} if start_after else {}
    try:
        pages = client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, **after)
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"], item.get("ETag", "")
    except Exception as exc:  # botocore raises many types; each is a listing failure
        raise RecordingError(f"s3://{bucket}/{prefix}: {exc}") from None
