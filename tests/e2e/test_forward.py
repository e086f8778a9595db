"""Port forwarding through the gateway: ssh -L, ssh -D (SOCKS5), and the VSCode Remote-SSH flow."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Sequence
from contextlib import AbstractContextManager

import pytest

from tests.support.gateway import Client
from tests.support.net import free_port, wait_port
from tests.support.process import background
from tests.support.tcp import echo_server, recv_exact, socks5_connect
from tests.support.vscode import remote_ssh_flow


def ssh_background(
    client: Client, login: str, options: Sequence[str], *args: str
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    return background(client.ssh_argv(login, *args, options=options))


def _echo_roundtrip(sock_factory, size: int = 256 * 1024) -> None:  # type: ignore[no-untyped-def]
    payload = os.urandom(size)
    with sock_factory() as sock:
        sock.sendall(payload)
        assert recv_exact(sock, size) == payload


def test_local_forward(alice: Client) -> None:
    with echo_server() as target:
        local = free_port()
        with ssh_background(alice, "alice+web-1", ["-N", "-L", f"127.0.0.1:{local}:127.0.0.1:{target}"]):
            wait_port(local)
            for _ in range(3):
                _echo_roundtrip(lambda: socket.create_connection(("127.0.0.1", local), timeout=10))


def test_dynamic_forward_socks5(alice: Client) -> None:
    with echo_server() as target:
        socks = free_port()
        with ssh_background(alice, "alice+web-1", ["-N", "-D", f"127.0.0.1:{socks}"]):
            wait_port(socks)
            _echo_roundtrip(lambda: socks5_connect(socks, "127.0.0.1", target))


def test_forward_to_closed_port_is_refused_cleanly(alice: Client) -> None:
    socks = free_port()
    closed = free_port()
    with ssh_background(alice, "alice+web-1", ["-N", "-D", f"127.0.0.1:{socks}"]) as proc:
        wait_port(socks)
        # OpenSSH closes the SOCKS client's socket when the gateway refuses the channel.
        with pytest.raises((OSError, EOFError)):
            socks5_connect(socks, "127.0.0.1", closed)
        with echo_server() as target:  # the connection keeps serving
            _echo_roundtrip(lambda: socks5_connect(socks, "127.0.0.1", target))
        assert proc.poll() is None


def test_vscode_remote_ssh_flow(alice: Client) -> None:
    """VSCode: `ssh -T -D PORT host bash`, a bootstrap script on stdin, then SOCKS5 to its server."""
    remote_ssh_flow(lambda options: alice.ssh_argv("alice+web-1", "bash", options=options))
