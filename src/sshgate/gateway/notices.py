"""Progress lines for the client (DESIGN §1 "Where the client reads it").

A connection may start binding before it has any session channel (a ``+resource`` login binds
as soon as authentication completes), so lines wait here until the first session channel
attaches, then go to its stderr as ``sshgate: …`` lines; stdout only ever carries upstream bytes.
"""

from __future__ import annotations

from collections.abc import Callable

MAX_HELD = 32  # a connection that never opens a session channel must not grow this


class Notices:
    def __init__(self) -> None:
        self._held: list[str] = []
        self._write: Callable[[str], None] | None = None
        self._owner: object | None = None

    def send(self, text: str) -> None:
        line = f"sshgate: {text}"
        if self._write is not None:
            self._write(line)
        elif len(self._held) < MAX_HELD:
            self._held.append(line)

    def attach(self, owner: object, write: Callable[[str], None]) -> None:
        """The first session channel to attach receives every line, the held ones first."""
        if self._owner is not None:
            return
        self._owner, self._write = owner, write
        held, self._held = self._held, []
        for line in held:
            write(line)

    def detach(self, owner: object) -> None:
        """That channel closed: later lines wait for none (the connection is ending anyway)."""
        if self._owner is owner:
            self._write = None
