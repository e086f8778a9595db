"""The one interface the gateway uses for shared state, and the records that cross it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sshgate.oidc.bindings import KeyBinding

# The owning process closes the session with "sshgate: session terminated by <by>".
TerminateHandler = Callable[[str, str], bool]
RevokedHandler = Callable[[set[str]], None]
# The web app's records (docs/api.md, "Sign-in"): browser sessions, sign-ins in flight, one-time links.
RecordKind = Literal["session", "signin", "link"]
RECORD_KINDS: tuple[RecordKind, ...] = ("session", "signin", "link")


@dataclass(frozen=True, slots=True)
class LiveSession:
    """One bound session, wherever it runs: the registry the web app lists and acts on."""

    session_id: str
    replica: str
    user: str
    resource: str
    started_at: float


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """Terminal output of one channel for live viewers; empty ``data`` says the channel closed."""

    channel: int
    t: float  # seconds since the channel opened, as in its asciicast
    data: bytes


class StateUnavailable(Exception):
    """The shared store did not answer within its bound; callers fall back to what they hold."""


class SharedState(Protocol):
    """Failed-login counters and lockouts per address, per-user session counts, the live-session
    registry with its output and terminate channels, SSO key bindings and step-up times, and the
    web app's sign-in records.

    Every call returns within a bound (``state.timeout_ms`` for the store): an unreachable store
    degrades to this process's own view instead of stalling a login.
    """

    replica: str

    @property
    def available(self) -> bool:
        """False while the shared store cannot be reached (counters are this process's alone)."""

    async def start(self, on_terminate: TerminateHandler, on_revoked: RevokedHandler) -> None:
        """Begin background work; ``on_terminate`` closes a session of this process."""

    async def aclose(self) -> None: ...

    # Failed logins per client address

    async def locked_for(self, address: str) -> float:
        """Seconds the address stays locked out (0 when it may try)."""

    async def failure(self, address: str, limit: int, lockout_s: float) -> bool:
        """Count one failed attempt; True when this one locks the address."""

    # Sessions

    async def open_session(self, session: LiveSession, limit: int) -> bool:
        """Register a session unless its user already has ``limit`` open everywhere."""

    async def close_session(self, session: LiveSession) -> None: ...

    async def sessions(self) -> list[LiveSession]:
        """Every replica's live sessions; only this process's own while ``available`` is False."""

    def watched(self, session_id: str) -> bool:
        """True while someone, on any worker or replica, watches the session live: only then
        does the relay publish its output (a set lookup on the hot path, nothing more)."""

    def publish_output(self, session_id: str, chunk: OutputChunk) -> None:
        """Live output of a session, for whoever subscribed; never waits (a slow path drops)."""

    def subscribe_output(self, session_id: str) -> AsyncIterator[OutputChunk]:
        """The session's live output from now on, until the caller stops iterating; raises
        :class:`StateUnavailable` for another replica's session while the store is away."""

    async def terminate(self, session_id: str, by: str) -> bool:
        """Ask the owning replica to close a session; False when nobody holds it, and
        :class:`StateUnavailable` when it may be elsewhere and the store is away."""

    # SSO key bindings and step-up times (docs/oidc.md)

    async def binding(self, fingerprint: str) -> KeyBinding | None: ...

    async def bind(self, binding: KeyBinding) -> None: ...

    async def bindings(self) -> list[KeyBinding]: ...

    async def revoke(self, fingerprint: str | None = None, email: str | None = None) -> list[KeyBinding]:
        """End the bindings of one key or of every key of one person; the ones removed."""

    async def step_up_at(self, provider: str, email: str) -> float | None: ...

    async def record_step_up(self, provider: str, email: str, at: float) -> None: ...

    # The web app's records, each under the hash of its cookie or token (never the value itself),
    # gone at ``expires_at`` (wall clock). Only take_record and claim_record may raise
    # StateUnavailable.

    async def put_record(
        self, kind: RecordKind, key: str, doc: dict[str, Any], expires_at: float, once: bool = False
    ) -> None:
        """Store a record; ``once``: it is only ever taken (take_record), at most once anywhere."""

    async def get_record(self, kind: RecordKind, key: str) -> dict[str, Any] | None: ...

    async def take_record(self, kind: RecordKind, key: str) -> dict[str, Any] | None:
        """Read and remove in one step: of two replicas taking one record, one gets it."""

    async def drop_record(self, kind: RecordKind, key: str) -> None: ...

    async def claim_record(self, kind: RecordKind, key: str, expires_at: float) -> bool:
        """Mark ``key`` used until ``expires_at`` in one step: of two replicas claiming one key,
        one gets True. Never in a copy: StateUnavailable while the shared place is away."""
