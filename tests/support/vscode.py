"""The VSCode / Cursor Remote-SSH flow as the editors run it, with the stock OpenSSH client:
``ssh -T -D PORT HOST bash``, a bootstrap script on bash's stdin that starts a server and prints
``listeningOn=PORT``, then the editor's connection to that server through the SOCKS5 forward."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

from tests.support.net import free_port, wait_port
from tests.support.process import background
from tests.support.tcp import recv_exact, socks5_connect

# Stands in for the VS Code server: an upper-casing echo on a free loopback port, in background.
BOOTSTRAP = b"""python3 -u -c '
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(4)
print("listeningOn=%d" % s.getsockname()[1], flush=True)
c, _ = s.accept()
while True:
    d = c.recv(65536)
    if not d: break
    c.sendall(d.upper())
' &
"""


def remote_ssh_flow(argv: Callable[[Sequence[str]], list[str]], timeout: float = 30.0) -> None:
    """Run the flow; ``argv(options)`` is the ssh command line with ``options`` placed before the
    host and ``bash`` as the command. Fails unless the server answers through the forward."""
    socks = free_port()
    with background(argv(["-T", "-D", f"127.0.0.1:{socks}"])) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(BOOTSTRAP)
        proc.stdin.flush()
        deadline = time.monotonic() + timeout
        line = b""
        while b"listeningOn=" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        match = re.search(rb"listeningOn=(\d+)", line)
        assert match, (line, proc.poll(), proc.stderr.read() if proc.poll() is not None else b"")
        wait_port(socks)
        with socks5_connect(socks, "127.0.0.1", int(match.group(1))) as sock:
            sock.sendall(b"vscode-server hello")
            assert recv_exact(sock, 19) == b"VSCODE-SERVER HELLO"
