"""A real redis-server on 127.0.0.1 for the state tests, and a store that never answers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.net import free_port, wait_port
from tests.support.tcp import serve_tcp


class RedisServer:
    """One redis-server without persistence: a restart comes back empty, as a lost node does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root), "--protected-mode", "yes", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), "--raw", *args], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip()


@contextmanager
def silent_store() -> Iterator[int]:
    """A TCP listener that accepts connections and never answers: a hung store."""

    def hold(conn: socket.socket, stop: threading.Event) -> None:
        stop.wait()  # serve_tcp closes the connection when the block ends

    with serve_tcp(hold) as port:
        yield port
