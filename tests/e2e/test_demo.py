"""`sshgate demo` on a fresh directory: the printed ssh lines work as pasted, Ctrl-C stops it."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time


def test_demo_prints_working_ssh_lines() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "sshgate.cli", "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert demo.stdout is not None
        lines: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while len(lines) < 3 and time.monotonic() < deadline:
            line = demo.stdout.readline()
            match = re.match(r"\s+(Interactive shell|One command|What you may reach):\s+(ssh .*)$", line)
            if match:
                lines[match.group(1)] = match.group(2)
        assert len(lines) == 3, lines
        one = subprocess.run(shlex.split(lines["One command"]), capture_output=True, timeout=30, input=b"")
        assert one.returncode == 0, one.stderr
        assert one.stdout.startswith(b"Linux ")
        listing = subprocess.run(
            shlex.split(lines["What you may reach"]), capture_output=True, timeout=30, input=b""
        )
        assert listing.stdout == b"demo\tssh\tdemo\n"
        shell = subprocess.run(
            [*shlex.split(lines["Interactive shell"]), "-T"],
            input=b"cat README.txt\nexit 7\n",
            capture_output=True,
            timeout=30,
        )
        assert b"reached through sshgate" in shell.stdout
        assert shell.returncode == 7
    finally:
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=15) == 0
