"""``sshgate:`` lines for the client: how one reads on stderr, and where a connection's go.

Every line the gateway itself writes to a client (a refusal, a notice before a close, a sign-in
URL and code) has the same shape: ``sshgate: `` first, and ``\\r\\n`` line ends on a terminal
(the client's tty is raw, so a bare ``\\n`` would not return the cursor).
"""

from __future__ import annotations

from collections.abc import Callable

PREFIX = "sshgate: "


def client_text(text: str, pty: bool = False, *, prefixed: bool = True) -> str:
    """``text`` as the client reads it: prefixed (unless it is usage text), one line end after it."""
    end = "\r\n" if pty else "\n"
    body = text.rstrip("\n")
    return ((PREFIX if prefixed else "") + body).replace("\n", end) + end


class Notices:
    """Lines for the client, written to the first session channel that opens (docs/oidc.md)."""

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._write: Callable[[str], None] | None = None

    def attach(self, write: Callable[[str], None]) -> None:
        """Called by every session channel that starts; only the first one becomes the sink."""
        if self._write is not None:
            return
        self._write = write
        for line in self._pending:
            write(line)
        self._pending.clear()

    def say(self, line: str) -> None:
        if self._write is None:
            self._pending.append(line)
        else:
            self._write(line)
