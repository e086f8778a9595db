"""The web app's records in a shared place (the supervisor of ``workers: N``, or the store of
replicas) with this process's copy for while that place is away (docs/operations.md, "Replicas").

Browser sessions: every one this process wrote or read is copied, so they keep working here while
the shared place is away; what changed here meanwhile (a sign-in, a sign-out) is written there
first when it answers again, and until then this process's word wins over the shared place's.
Single-use records (sign-ins in flight, one-time links) are never served from a copy of the
shared place's: one written while it is away lives here only (and is removed there when it is
back, in case the write landed), one written there is taken there or not at all.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Protocol

from sshgate.state.base import RECORD_KINDS, RecordKind, StateUnavailable
from sshgate.state.records import MAX_RECORDS, Entry, ExpiringRecords


class RecordRemote(Protocol):
    """The shared place, each call bounded; :class:`StateUnavailable` when it did not answer."""

    async def put_record(
        self, kind: RecordKind, key: str, doc: dict[str, Any], expires_at: float
    ) -> None: ...

    async def record_entry(self, kind: RecordKind, key: str) -> Entry | None: ...

    async def take_record(self, kind: RecordKind, key: str) -> dict[str, Any] | None: ...

    async def drop_record(self, kind: RecordKind, key: str) -> None: ...

    async def claim_record(self, kind: RecordKind, key: str, expires_at: float) -> bool: ...


class CopiedRecords:
    def __init__(self, remote: RecordRemote) -> None:
        self.remote = remote
        self.copy = ExpiringRecords()
        # Changes the shared place has not seen yet, oldest first: True writes, False removes.
        self._pending: OrderedDict[tuple[RecordKind, str], bool] = OrderedDict()

    def _remember(self, kind: RecordKind, key: str, write: bool) -> None:
        self._pending[(kind, key)] = write
        self._pending.move_to_end((kind, key))
        while len(self._pending) > MAX_RECORDS * len(RECORD_KINDS):
            self._pending.popitem(last=False)

    async def replay(self) -> None:
        """Bring the shared place up to date with what happened here while it was away."""
        try:
            while self._pending:
                (kind, key), write = next(iter(self._pending.items()))
                entry = self.copy.entry(kind, key) if write else None
                if entry is not None:
                    await self.remote.put_record(kind, key, *entry)
                elif not write:
                    await self.remote.drop_record(kind, key)
                self._pending.pop((kind, key), None)
        except StateUnavailable:
            pass

    async def put(
        self, kind: RecordKind, key: str, doc: dict[str, Any], expires_at: float, once: bool
    ) -> None:
        await self.replay()
        if once:
            try:
                await self.remote.put_record(kind, key, doc, expires_at)
            except StateUnavailable:
                self.copy.put(kind, key, doc, expires_at)
                self._remember(kind, key, write=False)
            return
        self.copy.put(kind, key, doc, expires_at)
        try:
            await self.remote.put_record(kind, key, doc, expires_at)
        except StateUnavailable:
            self._remember(kind, key, write=True)

    async def get(self, kind: RecordKind, key: str) -> dict[str, Any] | None:
        await self.replay()
        if (kind, key) in self._pending:
            return self.copy.get(kind, key)
        try:
            found = await self.remote.record_entry(kind, key)
        except StateUnavailable:
            return self.copy.get(kind, key)
        if found is None:
            self.copy.drop(kind, key)
            return None
        self.copy.put(kind, key, *found)
        return found[0]

    async def take(self, kind: RecordKind, key: str) -> dict[str, Any] | None:
        await self.replay()
        here = self.copy.take(kind, key)
        if here is not None:
            return here
        return await self.remote.take_record(kind, key)

    async def drop(self, kind: RecordKind, key: str) -> None:
        self.copy.drop(kind, key)
        try:
            await self.remote.drop_record(kind, key)
        except StateUnavailable:
            self._remember(kind, key, write=False)

    async def claim(self, kind: RecordKind, key: str, expires_at: float) -> bool:
        """In the shared place only, like taking a single-use record."""
        await self.replay()
        return await self.remote.claim_record(kind, key, expires_at)


class CopiedRecordCalls:
    """The SharedState record calls on :class:`CopiedRecords` (a worker's, a replica's)."""

    records: CopiedRecords

    async def put_record(
        self, kind: RecordKind, key: str, doc: dict[str, Any], expires_at: float, once: bool = False
    ) -> None:
        await self.records.put(kind, key, doc, expires_at, once)

    async def get_record(self, kind: RecordKind, key: str) -> dict[str, Any] | None:
        return await self.records.get(kind, key)

    async def take_record(self, kind: RecordKind, key: str) -> dict[str, Any] | None:
        return await self.records.take(kind, key)

    async def drop_record(self, kind: RecordKind, key: str) -> None:
        await self.records.drop(kind, key)

    async def claim_record(self, kind: RecordKind, key: str, expires_at: float) -> bool:
        return await self.records.claim(kind, key, expires_at)
