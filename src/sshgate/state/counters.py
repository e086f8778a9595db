"""This process's own failed-login counters and open sessions, without I/O.

The whole truth for a single gateway (and for the supervisor of ``workers: N``); a replica's
fallback while the shared store is unreachable.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable

from sshgate.gateway.lockout import FailureTracker
from sshgate.state.base import LiveSession, StateUnavailable


class LocalCounters:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.tracker = FailureTracker(10, 300.0, clock)
        self.sessions: dict[str, LiveSession] = {}
        self._per_user: Counter[str] = Counter()

    def locked_for(self, address: str) -> float:
        return self.tracker.locked_for(address)

    def failure(self, address: str, limit: int, lockout_s: float) -> bool:
        self.tracker.limit, self.tracker.lockout_s = limit, lockout_s
        return self.tracker.failure(address)

    def open_session(self, session: LiveSession, limit: int | None) -> bool:
        """Register ``session`` unless its user is at ``limit`` (None: register regardless)."""
        if session.session_id in self.sessions:
            return True
        if limit is not None and self._per_user[session.user] >= limit:
            return False
        self.sessions[session.session_id] = session
        self._per_user[session.user] += 1
        return True

    async def admit(self, session: LiveSession, limit: int, shared: Awaitable[bool]) -> bool:
        """What the shared count says about ``session``; without an answer, this process's own."""
        try:
            admitted = await shared
        except StateUnavailable:
            return self.open_session(session, limit)
        if admitted:
            self.open_session(session, None)
        return admitted

    def close_session(self, session_id: str) -> LiveSession | None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            self._per_user[session.user] -= 1
            if self._per_user[session.user] <= 0:
                del self._per_user[session.user]
        return session

    def open_count(self, user: str) -> int:
        return self._per_user[user]
