"""A small in-process sshd for ``sshgate demo``: real shells, exec, sftp, scp and TCP forwards
in a temporary directory, so the demo needs no system sshd."""

from __future__ import annotations

import asyncio
import os
import pty
import struct
import termios
from collections.abc import Awaitable, Callable
from fcntl import ioctl
from pathlib import Path

import asyncssh


class _DemoServer(asyncssh.SSHServer):
    def __init__(self, username: str, client_key: asyncssh.SSHKey) -> None:
        self._username = username
        self._key = client_key.public_data

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == self._username and key.public_data == self._key

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        return dest_host in ("127.0.0.1", "localhost", "::1")


def _set_size(fd: int, size: tuple[int, int, int, int]) -> None:
    cols, rows, width, height = size
    ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, width, height))


SFTP_SERVER = "/usr/lib/openssh/sftp-server"


async def _pump(
    read: Callable[[int], Awaitable[bytes]], write: Callable[[bytes], object], done: Callable[[], object]
) -> None:
    """Copy until EOF; a PTY master reports the child's exit as EIO, which is EOF here."""
    try:
        while data := await read(65536):
            write(data)
    except (OSError, asyncssh.Error):
        pass
    done()


async def _pipe_streams(master: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(master, "rb", 0))
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(os.dup(master), "wb", 0)
    )
    return reader, asyncio.StreamWriter(transport, protocol, None, loop)


async def _run(process: asyncssh.SSHServerProcess[bytes], home: Path) -> None:
    # OpenSSH's own sftp-server reports an exit status, which scp's SFTP mode checks.
    command = process.command or os.environ.get("SHELL", "/bin/bash")
    if process.subsystem == "sftp":
        command = f"{SFTP_SERVER} -d {home}"
    env = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "USER": "demo",
        "TERM": process.get_terminal_type() or "dumb",
        "PS1": "demo$ ",
    }
    if process.get_terminal_type():
        master, slave = pty.openpty()
        _set_size(slave, process.get_terminal_size())
        proc = await asyncio.create_subprocess_shell(
            command if process.command else f"exec {command} --norc -i",
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=home,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        out, into = await _pipe_streams(master)
        pumps = [_pump(out.read, process.stdout.write, lambda: None)]
    else:
        proc = await asyncio.create_subprocess_shell(
            command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=home,
            env=env,
        )
        assert proc.stdin and proc.stdout and proc.stderr
        into = proc.stdin
        pumps = [
            _pump(proc.stdout.read, process.stdout.write, lambda: None),
            _pump(proc.stderr.read, process.stderr.write, lambda: None),
        ]
    feeder = asyncio.create_task(_pump(process.stdin.read, into.write, into.close))
    await asyncio.gather(*pumps)
    status = await proc.wait()
    feeder.cancel()
    process.exit(status if status >= 0 else 128 - status)


async def start_demo_upstream(
    home: Path, username: str, client_key: asyncssh.SSHKey, host_key: asyncssh.SSHKey
) -> asyncssh.SSHAcceptor:
    return await asyncssh.create_server(
        lambda: _DemoServer(username, client_key),
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        process_factory=lambda p: _run(p, home),
        allow_scp=True,
        encoding=None,
        line_editor=False,
    )
