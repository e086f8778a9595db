"""Per-address failed-authentication counting and lockout, free of I/O and of the clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Entry:
    failures: int = 0
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
        if entry is None:
            return 0.0
        remaining = entry.locked_until - self._clock()
        if remaining > 0:
            return remaining
        if entry.locked_until:
            del self._entries[address]
        return 0.0

    def failure(self, address: str) -> bool:
        """Count one failure; True when this one locks the address."""
        entry = self._entries.setdefault(address, _Entry())
        entry.failures += 1
        if entry.failures >= self.limit:
            entry.failures = 0
            entry.locked_until = self._clock() + self.lockout_s
            return True
        return False

    def success(self, address: str) -> None:
        self._entries.pop(address, None)
