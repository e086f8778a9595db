"""A single gateway process: its own memory is the shared state (``workers: 1``, no ``state:``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sshgate.state.base import LiveSession, OutputChunk, RevokedHandler, TerminateHandler
from sshgate.state.counters import LocalCounters
from sshgate.state.file_bindings import FileBindings
from sshgate.state.outputs import OutputHub


class LocalState(FileBindings):
    def __init__(self, data_dir: str, replica: str = "local") -> None:
        super().__init__(data_dir)
        self.replica = replica
        self.counters = LocalCounters()
        self.hub = OutputHub()
        self._on_terminate: TerminateHandler = lambda _sid, _by: False
        self._stop = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        return True

    async def start(self, on_terminate: TerminateHandler, on_revoked: RevokedHandler) -> None:
        self._on_terminate = on_terminate
        self._watch = self.watch_bindings(on_revoked, self._stop)

    async def aclose(self) -> None:
        self._stop.set()
        if self._watch is not None:
            await self._watch

    async def locked_for(self, address: str) -> float:
        return self.counters.locked_for(address)

    async def failure(self, address: str, limit: int, lockout_s: float) -> bool:
        return self.counters.failure(address, limit, lockout_s)

    async def open_session(self, session: LiveSession, limit: int) -> bool:
        return self.counters.open_session(session, limit)

    async def close_session(self, session: LiveSession) -> None:
        self.counters.close_session(session.session_id)

    async def sessions(self) -> list[LiveSession]:
        return list(self.counters.sessions.values())

    def watched(self, session_id: str) -> bool:
        return self.hub.watched(session_id)

    def publish_output(self, session_id: str, chunk: OutputChunk) -> None:
        self.hub.publish(session_id, chunk)

    def subscribe_output(self, session_id: str) -> AsyncIterator[OutputChunk]:
        return self.hub.subscribe(session_id)

    async def terminate(self, session_id: str, by: str) -> bool:
        return session_id in self.counters.sessions and self._on_terminate(session_id, by)
