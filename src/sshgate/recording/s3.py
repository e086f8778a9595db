"""Shipping spooled recordings to S3: one upload at a time in order (channel files, then
session.json, then the spool directory is removed), each retried with backoff until it lands.

boto3 blocks, so every call runs in a thread. Large files go up as multipart uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from boto3.s3.transfer import TransferConfig

from sshgate.recording.manifest import SESSION_FILE

log = structlog.get_logger("sshgate.recording")

MULTIPART_BYTES = 8 << 20


class S3Sink:
    """Uploads files under ``root`` to ``bucket`` at ``prefix`` + their path relative to ``root``."""

    def __init__(
        self,
        client: Callable[[], Any],
        bucket: str,
        prefix: str,
        root: Path,
        backoff: tuple[float, float] = (0.5, 30.0),
        drain_timeout: float = 20.0,
    ) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.root = root
        self._backoff = backoff
        self._drain_timeout = drain_timeout
        self._queue: asyncio.Queue[tuple[Path, bool]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._sent: dict[Path, set[str]] = {}
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES
        )

    def key(self, path: Path) -> str:
        return self.prefix + path.relative_to(self.root).as_posix()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def put(self, path: Path) -> None:
        """Upload one finished channel file."""
        self._queue.put_nowait((path, False))

    def put_session(self, directory: Path) -> None:
        """Upload every file of a finished session not yet sent, session.json last, then drop the spool."""
        self._queue.put_nowait((directory, True))

    async def drain(self) -> None:
        """Wait until everything queued so far is in S3."""
        await self._queue.join()

    async def aclose(self) -> None:
        """Give queued uploads ``drain_timeout`` seconds; what remains is uploaded at the next start."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), self._drain_timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            path, whole_session = await self._queue.get()
            try:
                if whole_session:
                    await self._upload_session(path)
                else:
                    await self._upload(path)
            finally:
                self._queue.task_done()

    async def _upload_session(self, directory: Path) -> None:
        files = await asyncio.to_thread(lambda: sorted(p for p in directory.iterdir() if p.is_file()))
        sent = self._sent.pop(directory, set())
        for path in files:
            if path.name not in (SESSION_FILE, *sent) and not path.name.endswith(".tmp"):
                await self._upload(path)
        await self._upload(directory / SESSION_FILE)
        await asyncio.to_thread(shutil.rmtree, directory, True)

    async def _upload(self, path: Path) -> None:
        delay, cap = self._backoff
        key = self.key(path)
        while True:
            try:
                await asyncio.to_thread(
                    self._client().upload_file, str(path), self.bucket, key, Config=self._transfer
                )
                self._sent.setdefault(path.parent, set()).add(path.name)
                return
            except FileNotFoundError:
                log.error("recording.upload", key=key, error="spooled file vanished")
                return
            except Exception as exc:  # boto3 raises many types; every one is retried
                log.warning("recording.upload", key=key, error=str(exc), retry_in=round(delay, 2))
            await asyncio.sleep(delay * (0.75 + random.random() / 2))
            delay = min(delay * 2, cap)
