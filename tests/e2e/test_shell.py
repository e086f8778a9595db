"""An interactive PTY shell through the gateway, driven through a real pseudo-terminal."""

from __future__ import annotations

from tests.support.gateway import Client
from tests.support.terminal import Terminal


def test_pty_shell_type_resize_exit(alice: Client) -> None:
    term = Terminal(
        alice.ssh_argv("alice+web-1", options=["-tt", "-o", "SetEnv=LANG=C.UTF-8"]), rows=30, cols=100
    )
    try:
        term.write("PS1='prompt> '; echo ready-$((6*7))\n")
        term.read_until(r"ready-42")
        term.read_until(r"prompt> ")
        term.write("stty size; echo $TERM; tty; echo $LANG\n")
        seen = term.read_until(r"prompt> ")
        assert b"30 100" in seen
        assert b"/dev/pts/" in seen
        assert b"C.UTF-8" in seen
        term.resize(40, 132)
        # Type only once bash redrew its prompt on SIGWINCH: OpenSSH may send input typed right
        # after a SIGWINCH ahead of the window change (both land in one turn of its loop).
        term.read_until(r"\x1b\[K\rprompt> ")
        term.write("stty size\n")
        term.read_until(r"\r40 132\r\n")
        term.write("exit 0\n")
        assert term.wait() == 0
    finally:
        term.close()


def test_formal_shell_with_cursor_style_shell_option(alice: Client) -> None:
    """Cursor sends --shell "/bin/bash -c '...'"; the quoted program must run as written."""
    shell = "\"/bin/bash -c 'exec env SSHGATE_MARK=cursor /bin/bash'\""
    result = alice.ssh("alice", f"formal web-1 --shell {shell}", input=b"echo mark=$SSHGATE_MARK\nexit 5\n")
    assert result.stdout == b"mark=cursor\n", result.stderr
    assert result.returncode == 5


def test_shell_without_pty_bridges_bytes(alice: Client) -> None:
    """VSCode and `RequestTTY no` get a shell whose stdin/stdout are relayed byte for byte."""
    result = alice.ssh("alice+web-1", options=["-T"], input=b"printf '\\x00\\x01\\xff'\nexit\n")
    assert result.stdout == b"\x00\x01\xff"
    assert result.returncode == 0
