"""The recorder seam: what the relay tells a recording, and a recorder that keeps nothing.

Calls on a :class:`ChannelRecording` happen on the relay's hot path, so implementations must
only buffer in memory; writing to disk or S3 happens elsewhere.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal, Protocol

ChannelKind = Literal["shell", "exec", "sftp", "forward"]
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""What a session id may be: it names a directory."""
EndStatus = Literal["closed", "aborted", "interrupted"]
"""``aborted``: the client left while the session was being set up (docs/recordings.md)."""
EndReason = Literal[
    "client", "upstream", "refused", "terminated", "idle_timeout", "max_session", "drain", "error"
]


class RecordingError(Exception):
    """A recording that cannot be started; the session is refused (fail closed)."""


class ChannelRecording(Protocol):
    n: int  # the channel's number in the file names
    t0: float  # time.monotonic() when it opened: live output's times count from here
    # Its output bytes are recorded: only then may live viewers see them (scp / rsync only with
    # ``transfer_data``, docs/recordings.md).
    keeps_output: bool

    def output(self, data: bytes, stderr: bool = False) -> None: ...
    def input(self, data: bytes) -> None: ...
    def resize(self, cols: int, rows: int) -> None: ...
    def event(self, doc: dict[str, Any]) -> None: ...
    def backlog(self) -> int:
        """Bytes handed over but not yet taken by the writer: the relay slows down past a limit."""
        ...

    def close(self, exit_status: int | None = None, exit_signal: str | None = None) -> None: ...


class SessionRecording(Protocol):
    session_id: str

    def open_channel(self, kind: ChannelKind, meta: dict[str, Any]) -> ChannelRecording: ...
    def note_decision(self, decision: dict[str, Any]) -> None: ...
    def note(self, fields: dict[str, Any]) -> None:
        """Add top-level fields to session.json (``terminated_by``)."""
        ...

    async def close(self, status: EndStatus = "closed", *, end_reason: EndReason | None = None) -> None:
        """End the recording; ``end_reason`` None is ``client`` (the client left)."""
        ...


class Recorder(Protocol):
    async def start(self) -> list[str]:
        """Before serving: mark sessions a crash left active as interrupted; returns their ids."""

    async def start_session(self, session_id: str, meta: dict[str, Any]) -> SessionRecording: ...
    async def aclose(self) -> None: ...
    async def retire(self, stopping: asyncio.Event) -> None:
        """Close once the sessions started here have ended, or at ``stopping`` (a reload swapped
        in another recorder; open sessions keep recording where they started)."""
        ...


class _NullChannel:
    n = 0
    t0 = 0.0
    keeps_output = False

    def output(self, data: bytes, stderr: bool = False) -> None:
        pass

    def input(self, data: bytes) -> None:
        pass

    def resize(self, cols: int, rows: int) -> None:
        pass

    def event(self, doc: dict[str, Any]) -> None:
        pass

    def backlog(self) -> int:
        return 0

    def close(self, exit_status: int | None = None, exit_signal: str | None = None) -> None:
        pass


NULL_CHANNEL: ChannelRecording = _NullChannel()
"""A channel recording that keeps nothing, for channels not (yet) attached to a session."""


class _NullSession:
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id

    def open_channel(self, kind: ChannelKind, meta: dict[str, Any]) -> ChannelRecording:
        return NULL_CHANNEL

    def note_decision(self, decision: dict[str, Any]) -> None:
        pass

    def note(self, fields: dict[str, Any]) -> None:
        pass

    async def close(self, status: EndStatus = "closed", *, end_reason: EndReason | None = None) -> None:
        pass


class NullRecorder:
    """Keeps nothing; used until a sink is configured by the recording module."""

    async def start(self) -> list[str]:
        return []

    async def start_session(self, session_id: str, meta: dict[str, Any]) -> SessionRecording:
        return _NullSession(session_id)

    async def aclose(self) -> None:
        pass

    async def retire(self, stopping: asyncio.Event) -> None:
        pass
