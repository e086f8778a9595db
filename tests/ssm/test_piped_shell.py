"""Terminal-less shells over an SSM pty (``PipedShell``): the wrapper against the emulator's agent,
and which exec commands take that path."""

from __future__ import annotations

import hashlib
import os

import pytest

from sshgate.ssm.client import open_shell
from sshgate.ssm.emulator import Emulator
from sshgate.upstream.ssm import stdin_shell
from sshgate.upstream.ssm_relay import PipedShell
from tests.ssm.conftest import Aws
from tests.ssm.test_sessions import read_all


@pytest.mark.parametrize(
    ("command", "program"),
    [
        ("bash", "bash"),
        ("/bin/bash --login", "/bin/bash --login"),
        ("sh -l", "sh -l"),
        ("bash -s one 'two words'", "bash -s one 'two words'"),
        ("bash -c 'cat'", None),
        ("bash -lc id", None),
        ("bash script.sh", None),
        ("python3", None),
        ("bash 'unterminated", None),
    ],
)
def test_which_exec_commands_are_shells_reading_stdin(command: str, program: str | None) -> None:
    assert stdin_shell(command) == program


async def test_piped_shell_carries_binary_stdin_to_eof_under_loss(aws: Aws, emulator: Emulator) -> None:
    """1 MiB of random bytes into sha256sum, EOF by the resize signal, status via the exit marker."""
    emulator.faults.configure(drop_rate=0.02, seed=11)
    piped = PipedShell("sh -c 'sha256sum; exit 6'")
    target = await aws.start("AWS-StartInteractiveCommand", {"command": [piped.command]})
    shell = await open_shell(target, control=aws.control, timeout=60)
    assert await piped.wait_ready(shell.read) == b""
    blob = os.urandom(1 << 20)
    await shell.write(blob)
    await shell.resize(*piped.EOF_SIZE)
    output = piped.exit.feed(await read_all(shell, timeout=60))
    assert output == f"{hashlib.sha256(blob).hexdigest()}  -\n".encode()
    assert piped.exit.status == 6


async def test_output_the_program_printed_before_the_ready_marker_is_kept() -> None:
    """The program starts beside the reader that prints the marker and may print first."""
    piped = PipedShell("sh")
    chunks = [b"line-1\nli", b"ne-2" + piped.ready[:5], piped.ready[5:] + b"\nline-3"]

    async def read() -> bytes:
        return chunks.pop(0)

    assert await piped.wait_ready(read) == b"line-1\nline-2\nline-3"
