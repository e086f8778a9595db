"""In-process fan-out of live session output to the subscribers of one process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sshgate.state.base import OutputChunk

# A watcher that falls this far behind loses the oldest chunks, never slows the session.
_QUEUE_CHUNKS = 256


class OutputHub:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[OutputChunk]]] = {}

    def watched(self, session_id: str) -> bool:
        return session_id in self._subscribers

    def publish(self, session_id: str, chunk: OutputChunk) -> None:
        for queue in self._subscribers.get(session_id, ()):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(chunk)

    async def subscribe(self, session_id: str) -> AsyncIterator[OutputChunk]:
        queue: asyncio.Queue[OutputChunk] = asyncio.Queue(_QUEUE_CHUNKS)
        self._subscribers.setdefault(session_id, set()).add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            queues = self._subscribers.get(session_id, set())
            queues.discard(queue)
            if not queues:
                self._subscribers.pop(session_id, None)
