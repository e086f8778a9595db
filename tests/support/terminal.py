"""Drive a program in a real pseudo-terminal, the way a person at a keyboard would."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Sequence


class Terminal:
    def __init__(self, argv: Sequence[str], rows: int = 24, cols: int = 80) -> None:
        self.master, slave = pty.openpty()
        self._set_size(slave, rows, cols)
        self.process = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            close_fds=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.output = b""

    @staticmethod
    def _set_size(fd: int, rows: int, cols: int) -> None:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def write(self, text: str) -> None:
        os.write(self.master, text.encode())

    def read_until(self, pattern: str | bytes, timeout: float = 10.0) -> bytes:
        """Read until ``pattern`` (a regex) matches the output seen since the last match."""
        regex = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.output)
            if match:
                seen, self.output = self.output[: match.end()], self.output[match.end() :]
                return seen
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{pattern!r} not seen; output so far: {self.output[-400:]!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise EOFError(f"terminal closed before {pattern!r}; output: {self.output[-400:]!r}")
                self.output += chunk

    def resize(self, rows: int, cols: int) -> None:
        self._set_size(self.master, rows, cols)
        self.process.send_signal(signal.SIGWINCH)

    def wait(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:
                    break
        return self.process.wait(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)
