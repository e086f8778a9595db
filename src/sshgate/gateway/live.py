"""A terminal channel's output for live viewers (docs/api.md, "Live view").

The relay calls :meth:`LiveOutput.output` with every chunk it passes to the client; while nobody
watches the session that is one set lookup (``SharedState.watched``) and nothing is copied.
"""

from __future__ import annotations

import time

from sshgate.state.base import OutputChunk, SharedState


class LiveOutput:
    __slots__ = ("_channel", "_session_id", "_state", "_t0")

    def __init__(self, state: SharedState, session_id: str, channel: int, t0: float) -> None:
        self._state = state
        self._session_id = session_id
        self._channel = channel
        self._t0 = t0

    def output(self, data: bytes) -> None:
        if self._state.watched(self._session_id):
            chunk = OutputChunk(self._channel, time.monotonic() - self._t0, data)
            self._state.publish_output(self._session_id, chunk)

    def closed(self) -> None:
        """Tell watchers the channel ended (an empty chunk)."""
        self.output(b"")
