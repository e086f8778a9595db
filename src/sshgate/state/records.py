"""The web app's records in one process's memory: bounded per kind, expiring. The store of a
single process (``LocalState``), of the supervisor of ``workers: N``, and the copy a worker or
replica keeps for while its shared place is away (record_copy.py)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from sshgate.state.base import RECORD_KINDS, RecordKind

# Per kind: a flood of sign-in starts evicts the oldest sign-ins, never a browser session.
MAX_RECORDS = 10_000

Entry = tuple[dict[str, Any], float]  # the document and when it expires (wall clock)


class ExpiringRecords:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._kinds: dict[str, OrderedDict[str, Entry]] = {kind: OrderedDict() for kind in RECORD_KINDS}

    def _of(self, kind: str) -> OrderedDict[str, Entry]:
        try:
            return self._kinds[kind]
        except KeyError:
            raise ValueError(f"unknown record kind {kind!r}") from None

    def put(self, kind: RecordKind, key: str, doc: dict[str, Any], expires_at: float) -> None:
        if expires_at <= self._clock():
            return
        items = self._of(kind)
        items[key] = (doc, expires_at)
        items.move_to_end(key)
        while len(items) > MAX_RECORDS:
            items.popitem(last=False)

    def entry(self, kind: RecordKind, key: str) -> Entry | None:
        items = self._of(kind)
        found = items.get(key)
        if found is not None and found[1] <= self._clock():
            del items[key]
            return None
        return found

    def get(self, kind: RecordKind, key: str) -> dict[str, Any] | None:
        found = self.entry(kind, key)
        return found[0] if found is not None else None

    def take(self, kind: RecordKind, key: str) -> dict[str, Any] | None:
        found = self.get(kind, key)
        self._of(kind).pop(key, None)
        return found

    def drop(self, kind: RecordKind, key: str) -> None:
        self._of(kind).pop(key, None)

    def claim(self, kind: RecordKind, key: str, expires_at: float) -> bool:
        """True if ``key`` was not there (and now is, empty, until ``expires_at``)."""
        if expires_at <= self._clock() or self.entry(kind, key) is not None:
            return False
        self.put(kind, key, {}, expires_at)
        return True


class LocalRecords:
    """The SharedState record calls on :class:`ExpiringRecords` (a process that is the whole gateway)."""

    records: ExpiringRecords

    async def put_record(
        self, kind: RecordKind, key: str, doc: dict[str, Any], expires_at: float, once: bool = False
    ) -> None:
        self.records.put(kind, key, doc, expires_at)

    async def get_record(self, kind: RecordKind, key: str) -> dict[str, Any] | None:
        return self.records.get(kind, key)

    async def take_record(self, kind: RecordKind, key: str) -> dict[str, Any] | None:
        return self.records.take(kind, key)

    async def drop_record(self, kind: RecordKind, key: str) -> None:
        self.records.drop(kind, key)

    async def claim_record(self, kind: RecordKind, key: str, expires_at: float) -> bool:
        return self.records.claim(kind, key, expires_at)
