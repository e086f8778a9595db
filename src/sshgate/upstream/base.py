"""The seam between the client-facing relay and any upstream transport.

The relay owns one :class:`Downstream` per client channel; an upstream transport returns an
:class:`UpstreamChannel` for it. Data flows as bytes in both directions with flow control
mapped across (a full client window pauses reading upstream and vice versa), so memory per
channel stays bounded by the SSH windows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from sshgate.refusal import Refusal


class UpstreamError(Refusal):
    """An upstream that cannot be used. ``str()`` is safe to show the client: it names the
    resource, never its address or the gateway's files; ``detail`` is for the audit log."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message, reason=detail, event="upstream.error")
        self.detail = self.reason


@dataclass(frozen=True, slots=True)
class ExitSignal:
    name: str
    core_dumped: bool = False
    message: str = ""


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """What a client session channel asked for, in upstream-neutral terms."""

    kind: Literal["shell", "exec", "subsystem"]
    command: str | None = None
    subsystem: str | None = None
    term_type: str | None = None
    term_size: tuple[int, int, int, int] | None = None
    term_modes: Mapping[int, int] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    shell: str | None = None
    container: str | None = None
    task: str | None = None
    # The client's forwarded ssh-agent, set only when it asked and the resource allows it.
    agent_path: str | None = None

    @property
    def pty(self) -> bool:
        return self.term_type is not None


class Downstream(Protocol):
    """The client side of a relayed channel, fed by the upstream transport."""

    def upstream_data(self, data: bytes, stderr: bool) -> None: ...
    def upstream_eof(self) -> None: ...
    def upstream_exit(self, status: int | None, signal: ExitSignal | None) -> None: ...
    def upstream_closed(self, error: str | None) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class UpstreamChannel(Protocol):
    """One upstream channel (session or TCP stream) relayed to one client channel."""

    def write(self, data: bytes) -> None: ...
    def write_eof(self) -> None: ...
    def resize(self, cols: int, rows: int, width: int, height: int) -> None: ...
    def send_signal(self, name: str) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...


class Upstream(Protocol):
    """A connected upstream shared by every channel of one bound client connection."""

    kind: str

    async def open_session(self, request: SessionRequest, downstream: Downstream) -> UpstreamChannel: ...
    async def open_tcp(self, host: str, port: int, downstream: Downstream) -> UpstreamChannel: ...
    async def close(self) -> None: ...
