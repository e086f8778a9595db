"""Per-address failed-authentication counting and lockout, free of I/O and of the clock.

A success does not clear an address's failures: an attacker who owns one working credential
could otherwise interleave logins with guesses and never be locked out. Failures are
forgotten ``lockout_s`` after the first one of a run instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Past this many remembered addresses, expired entries are swept on the next failure.
_SWEEP_AT = 10_000


@dataclass(slots=True)
class _Entry:
    failures: int = 0
    since: float = 0.0
    locked_until: float = 0.0


class FailureTracker:
    """Counts failures per client address; past ``limit`` the address is locked for ``lockout_s``."""

    def __init__(self, limit: int, lockout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.lockout_s = lockout_s
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def locked_for(self, address: str) -> float:
        """Seconds the address stays locked (0 when it may try)."""
        entry = self._entries.get(address)
        return max(0.0, entry.locked_until - self._clock()) if entry is not None else 0.0

    def failure(self, address: str) -> bool:
        """Count one failure; True when this one locks the address."""
        now = self._clock()
        if len(self._entries) >= _SWEEP_AT:
            self._sweep(now)
        entry = self._entries.setdefault(address, _Entry(since=now))
        if now - entry.since >= self.lockout_s:
            entry.failures, entry.since = 0, now
        entry.failures += 1
        if entry.failures >= self.limit:
            entry.failures, entry.since = 0, now
            entry.locked_until = now + self.lockout_s
            return True
        return False

    def _sweep(self, now: float) -> None:
        self._entries = {
            address: entry
            for address, entry in self._entries.items()
            if entry.locked_until > now or now - entry.since < self.lockout_s
        }
