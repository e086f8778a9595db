"""Shared state in Redis or Valkey (``state:``), with this replica's own view as the fallback.

Lockouts are mirrored from the store's ``locks`` channel, so checking one costs a login no
round trip while that channel is up. Every other call on a login's path waits at most
``state.timeout_ms``; once the store has failed one, calls go straight to the fallback until a
background probe (every 0.25 s) gets an answer again, so an unreachable or hanging store costs
a login nothing after the first timeout. While it is away: failed logins and sessions count on
this replica alone, bindings come from the last copy (for at most 60 s), terminate and live
output of other replicas' sessions are unavailable, the web app's browser sessions this
replica knows keep working from its copy (record_copy.py). When it answers again the replica
converges: it registers its sessions again, forgets the ones that ended, replays its failures,
lockouts, bindings and step-ups, and the web app's sign-ins and sign-outs
(docs/operations.md, "Replicas").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from redis.exceptions import RedisError

from sshgate import audit
from sshgate.oidc.bindings import KeyBinding
from sshgate.state.availability import Availability
from sshgate.state.base import (
    LiveSession,
    OutputChunk,
    RecordKind,
    RevokedHandler,
    StateUnavailable,
    TerminateHandler,
)
from sshgate.state.counters import LocalCounters
from sshgate.state.outputs import OutputHub
from sshgate.state.record_copy import CopiedRecordCalls, CopiedRecords
from sshgate.state.records import Entry
from sshgate.state.redis_store import RedisStore, Revocation, as_text

T = TypeVar("T")

PROBE_INTERVAL_S = 0.25
# Without the store a replica honours the bindings it last saw for this long (DESIGN §12).
CACHED_BINDINGS_S = 60.0
# A watcher renews its lease on a session's output every third of this; the owner publishes
# through the store only while a lease runs (nobody watching: the relay pays nothing).
WATCH_LEASE_S = 6.0
# Output waiting for the store; a watcher that far behind loses the oldest (the session never waits).
_OUTBOX_CHUNKS = 1024
# A terminate request older than this, or seen before, is ignored (replayed from the channel).
_CONTROL_MAX_AGE_S = 30.0
_FAULTS = (RedisError, OSError, TimeoutError, ConnectionError)
# Addresses whose failures wait to be replayed after an outage; past this, new ones count here only.
_PENDING_ADDRESSES = 10_000


def _why(exc: BaseException) -> str:
    """What went wrong, without the URL (which may hold a password)."""
    if isinstance(exc, TimeoutError):
        return "no answer within state.timeout_ms"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


class ReplicatedState(CopiedRecordCalls):
    def __init__(
        self,
        store: RedisStore,
        timeout_s: float,
        session_ttl_s: int,
        set_gauge: Callable[[bool], None],
    ) -> None:
        self.store = store
        self.replica = store.replica
        self.timeout_s = timeout_s
        self.session_ttl_s = session_ttl_s
        self.local = LocalCounters()
        self.hub = OutputHub()
        self.availability = Availability(set_gauge)
        self.log = audit.logger()
        self._on_terminate: TerminateHandler = lambda _sid, _by: False
        self._on_revoked: RevokedHandler = lambda _fps: None
        # What happened while the store was away, to replay when it is back.
        self._pending_failures: dict[str, deque[tuple[float, int, float]]] = {}
        self._pending_locks: dict[str, float] = {}
        self._pending_bindings: dict[str, KeyBinding] = {}
        self._binding_now: set[str] = set()  # bindings being written to the store
        self._pending_step_ups: dict[tuple[str, str], float] = {}
        # The last copy of the bindings, and when the store last answered.
        self._bindings: dict[str, KeyBinding] = {}
        # Revocations this replica knows of, kept here too: deleting a tombstone from the store
        # does not bring a revoked binding back on a replica that saw it go.
        self._revoked: dict[str, Revocation] = {}
        self._step_ups: dict[tuple[str, str], float] = {}
        self._contact = -CACHED_BINDINGS_S
        self._version: str | None = None
        self._heartbeat_at = -float("inf")
        self._seen_nonces: dict[str, float] = {}
        self._watch_leases: dict[str, float] = {}
        self._outbox: deque[tuple[str, OutputChunk]] = deque()
        self._outbox_ready = asyncio.Event()
        # Every lockout in the store, while subscribed to its announcements (else: ask the store).
        self._locks: dict[str, float] = {}
        self._locks_live = False
        self._forged_logged: dict[str, float] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.records = CopiedRecords(_StoreRecords(self))
        store.on_forged = self._forged

    @property
    def available(self) -> bool:
        return self.availability.available

    async def start(self, on_terminate: TerminateHandler, on_revoked: RevokedHandler) -> None:
        self._on_terminate, self._on_revoked = on_terminate, on_revoked
        try:
            await self._bounded(self._converge())
            self._version = await self._bounded(self.store.ping())
            await self._bounded(self._sync_bindings())
        except StateUnavailable:
            pass  # serve anyway; the probe converges once the store answers
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(t) for t in (self._probe(), self._control(), self._send_output())]

    async def aclose(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(*_FAULTS):
            await asyncio.wait_for(self.store.client.aclose(), self.timeout_s)

    # Bounded calls

    async def _bounded(self, call: Awaitable[T], factor: float = 1.0) -> T:
        try:
            result = await asyncio.wait_for(call, self.timeout_s * factor)
        except _FAULTS as exc:
            self.availability.down(_why(exc))
            raise StateUnavailable(_why(exc)) from None
        self._contact = time.monotonic()
        return result

    async def _try(self, make: Callable[[], Awaitable[T]]) -> T:
        """One store call on a login's path: at most ``timeout_ms``, none while the store is away."""
        if not self.availability.available:
            raise StateUnavailable("the state store is unavailable")
        return await self._bounded(make())

    def _forged(self, kind: str) -> None:
        """A record failed its HMAC: logged, at most once a minute per kind, and ignored."""
        now = time.monotonic()
        if now - self._forged_logged.get(kind, -120.0) >= 60.0:
            self._forged_logged[kind] = now
            self.log.warning("state.forged_record", kind=kind, result="ignored")

    # Failed logins

    async def locked_for(self, address: str) -> float:
        if self.available and self._locks_live:
            left = self._locks.get(address, 0.0) - time.time()
            if left <= 0:
                self._locks.pop(address, None)
            return max(0.0, left)
        try:
            return await self._try(lambda: self.store.locked_for(address))
        except StateUnavailable:
            return self.local.locked_for(address)

    async def failure(self, address: str, limit: int, lockout_s: float) -> bool:
        locked_here = self.local.failure(address, limit, lockout_s)
        at = time.time()
        try:
            locked = await self._try(lambda: self.store.failure(address, limit, lockout_s, at))
            if locked:
                self._locks[address] = time.time() + lockout_s  # before its announcement arrives
            return locked
        except StateUnavailable:
            if address in self._pending_failures or len(self._pending_failures) < _PENDING_ADDRESSES:
                self._pending_failures.setdefault(address, deque(maxlen=limit)).append((at, limit, lockout_s))
                if locked_here:
                    self._pending_locks[address] = at + lockout_s
            return locked_here

    # Sessions

    async def open_session(self, session: LiveSession, limit: int) -> bool:
        shared = self._try(lambda: self.store.open_session(session, limit, self.session_ttl_s))
        return await self.local.admit(session, limit, shared)

    async def close_session(self, session: LiveSession) -> None:
        self.local.close_session(session.session_id)
        with contextlib.suppress(StateUnavailable):
            await self._try(lambda: self.store.close_session(session))

    async def sessions(self) -> list[LiveSession]:
        try:
            return await self._try(self.store.live_sessions)
        except StateUnavailable:
            return list(self.local.sessions.values())

    def watched(self, session_id: str) -> bool:
        lease = self._watch_leases.get(session_id)
        return self.hub.watched(session_id) or (lease is not None and lease > time.monotonic())

    def publish_output(self, session_id: str, chunk: OutputChunk) -> None:
        """To this replica's own watchers at once; through the store in order, never waiting:
        a watcher on another replica loses output while the store is slow, the session does not."""
        self.hub.publish(session_id, chunk)
        lease = self._watch_leases.get(session_id)
        if lease is None or lease < time.monotonic() or not self.available:
            return
        if len(self._outbox) >= _OUTBOX_CHUNKS:
            self._outbox.popleft()
        self._outbox.append((session_id, chunk))
        self._outbox_ready.set()

    async def _send_output(self) -> None:
        """The one task that moves queued output to the store, in order."""
        while not self._stop.is_set():
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while self._outbox:
                session_id, chunk = self._outbox.popleft()
                with contextlib.suppress(StateUnavailable):
                    await self._try(partial(self.store.publish_output, session_id, chunk))

    async def subscribe_output(self, session_id: str) -> AsyncIterator[OutputChunk]:
        """Through the store; from this replica's own sessions only while the store is away."""
        if not self.available:
            if session_id not in self.local.sessions:
                raise StateUnavailable("live output of other replicas' sessions needs the state store")
            async for chunk in self.hub.subscribe(session_id):
                yield chunk
            return
        pubsub = self.store.client.pubsub()
        lease = asyncio.get_running_loop().create_task(self._keep_watching(session_id))
        try:
            await self._bounded(pubsub.subscribe(self.store.key("out", session_id)))
            async for chunk in self.store.output(pubsub, session_id):
                yield chunk
        finally:
            lease.cancel()
            with contextlib.suppress(*_FAULTS):
                await asyncio.wait_for(pubsub.aclose(), self.timeout_s)

    async def _keep_watching(self, session_id: str) -> None:
        """Renew the owner's lease on publishing this session's output while we subscribe."""
        while True:
            if session_id in self.local.sessions:
                self._watch_leases[session_id] = time.monotonic() + WATCH_LEASE_S
            else:
                with contextlib.suppress(StateUnavailable):
                    session = await self._try(lambda: self.store.session(session_id))
                    if session is not None:
                        await self._try(partial(self.store.send_watch, session.replica, session_id))
            await asyncio.sleep(WATCH_LEASE_S / 3)

    async def terminate(self, session_id: str, by: str) -> bool:
        """Close a session here, or ask its replica; StateUnavailable when it may be elsewhere."""
        if session_id in self.local.sessions:
            return self._on_terminate(session_id, by)
        session = await self._try(lambda: self.store.session(session_id))
        if session is None:
            return False
        return await self._try(lambda: self.store.send_terminate(session.replica, session_id, by)) > 0

    # SSO key bindings and step-ups

    def _last_copy_usable(self) -> bool:
        return time.monotonic() - self._contact <= CACHED_BINDINGS_S

    async def binding(self, fingerprint: str) -> KeyBinding | None:
        try:
            found = await self._try(lambda: self.store.binding(fingerprint))
        except StateUnavailable:
            found = self._bindings.get(fingerprint) if self._last_copy_usable() else None
        else:
            if found is not None and self._is_revoked(found):
                found = None
            if found is None:
                self._bindings.pop(fingerprint, None)
            else:
                self._bindings[fingerprint] = found
        return found if found is not None and found.expires_at > time.time() else None

    def _is_revoked(self, binding: KeyBinding) -> bool:
        """A binding from before its key's revocation: an old sealed value written back."""
        revocation = self._revoked.get(binding.fingerprint)
        return revocation is not None and binding.signed_in_at <= revocation.at

    async def bind(self, binding: KeyBinding) -> None:
        self._bindings[binding.fingerprint] = binding
        self._binding_now.add(binding.fingerprint)
        try:
            await self._try(lambda: self.store.bind([binding]))
        except StateUnavailable:
            self._pending_bindings[binding.fingerprint] = binding
        finally:
            self._binding_now.discard(binding.fingerprint)

    async def bindings(self) -> list[KeyBinding]:
        try:
            found = await self._try(self.store.all_bindings)
        except StateUnavailable:
            found = self._bindings
        now = time.time()
        return sorted(
            (b for b in found.values() if b.expires_at > now and not self._is_revoked(b)),
            key=lambda b: (b.email, b.fingerprint),
        )

    async def revoke(self, fingerprint: str | None = None, email: str | None = None) -> list[KeyBinding]:
        """Needs the store: a revocation that only one replica knew would be no revocation."""
        found = await self._try(self.store.all_bindings)
        who = email.lower() if email is not None else None
        gone = [b for b in found.values() if b.fingerprint == fingerprint or (who and b.email == who)]
        if gone:
            at = time.time()
            await self._try(lambda: self.store.unbind(gone, at))
            self._revoked.update((b.fingerprint, Revocation(at, b.expires_at)) for b in gone)
        if who is not None:
            await self._try(lambda: self.store.forget_step_ups(who))
        for binding in gone:
            self._bindings.pop(binding.fingerprint, None)
        return gone

    async def step_up_at(self, provider: str, email: str) -> float | None:
        try:
            return await self._try(lambda: self.store.step_up_at(provider, email))
        except StateUnavailable:
            return self._step_ups.get((provider, email)) if self._last_copy_usable() else None

    async def record_step_up(self, provider: str, email: str, at: float) -> None:
        self._step_ups[(provider, email)] = at
        try:
            await self._try(lambda: self.store.record_step_up(provider, email, at))
        except StateUnavailable:
            self._pending_step_ups[(provider, email)] = at

    # Background: probe, converge, heartbeat, revocations, terminate requests

    async def _probe(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), PROBE_INTERVAL_S)
            with contextlib.suppress(StateUnavailable):
                version = await self._bounded(self.store.ping())
                if not self.available:
                    await self._bounded(self._converge(), factor=20)
                    self.availability.up()
                    await self.records.replay()  # through _try: only once the store is up
                elif time.monotonic() - self._heartbeat_at >= self.session_ttl_s / 3:
                    if not await self._bounded(self.store.heartbeat(self.session_ttl_s)):
                        await self._bounded(self._register_sessions(), factor=20)
                    self._heartbeat_at = time.monotonic()
                if version != self._version:
                    self._version = version
                    await self._bounded(self._sync_bindings(), factor=4)

    async def _register_sessions(self) -> None:
        """Make the store's registry match this replica's sessions again."""
        for session in await self.store.live_sessions():
            if session.replica == self.replica and session.session_id not in self.local.sessions:
                await self.store.close_session(session)
        for session in list(self.local.sessions.values()):
            await self.store.open_session(session, None, self.session_ttl_s)

    async def _converge(self) -> None:
        await self.store.heartbeat(self.session_ttl_s)
        self._heartbeat_at = time.monotonic()
        await self._register_sessions()
        failures, self._pending_failures = self._pending_failures, {}
        for address, runs in failures.items():
            for at, limit, lockout_s in runs:
                await self.store.failure(address, limit, lockout_s, at)
        locks, self._pending_locks = self._pending_locks, {}
        for address, until in locks.items():
            await self.store.lock(address, until, only_if_unlocked=True)
        bindings, self._pending_bindings = self._pending_bindings, {}
        if bindings:
            await self.store.bind(bindings.values())
        step_ups, self._pending_step_ups = self._pending_step_ups, {}
        for (provider, email), at in step_ups.items():
            await self.store.record_step_up(provider, email, at)

    async def _sync_bindings(self) -> None:
        """Take the store's bindings as the last copy; report the revoked ones (not the expired)."""
        # Taken before the awaits: a binding made meanwhile, or whose write the store had not yet
        # run when it was read, is new, not gone.
        known, writing = dict(self._bindings), set(self._binding_now)
        now = time.time()
        self._revoked = {fp: r for fp, r in self._revoked.items() if r.until > now}
        self._revoked.update(await self.store.revocations())
        found = {fp: b for fp, b in (await self.store.all_bindings()).items() if not self._is_revoked(b)}
        new = writing | self._pending_bindings.keys()
        removed = {fp for fp, b in known.items() if fp not in found and b.expires_at > now and fp not in new}
        for fp in removed:  # gone without a tombstone (deleted by hand): revoked from now on here
            self._revoked.setdefault(fp, Revocation(now, known[fp].expires_at))
        self._bindings = found | self._pending_bindings
        if removed:
            self._on_revoked(removed)

    async def _control(self) -> None:
        """Lockouts announced by any replica (the mirror), and terminate requests for this one."""
        locks = self.store.lock_channel()
        while not self._stop.is_set():
            pubsub = self.store.client.pubsub()
            try:
                await asyncio.wait_for(pubsub.subscribe(self.store.control_channel(), locks), self.timeout_s)
                # Subscribed first, then read: a lockout set meanwhile is in one or the other.
                self._locks = await asyncio.wait_for(self.store.all_locks(), self.timeout_s * 20)
                self._locks_live = True
                while not self._stop.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    if as_text(message["channel"]) == locks:
                        self._lock_announced(message["data"])
                    else:
                        self._control_message(message["data"])
            except _FAULTS:
                self._locks_live = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)
            finally:
                self._locks_live = False
                with contextlib.suppress(*_FAULTS):
                    await asyncio.wait_for(pubsub.aclose(), self.timeout_s)

    def _lock_announced(self, data: bytes) -> None:
        announced = self.store.lock_message(data)
        if announced is None:
            return
        address, until = announced
        self._locks[address] = max(until, self._locks.get(address, 0.0))
        if len(self._locks) > _PENDING_ADDRESSES:
            now = time.time()
            self._locks = {a: u for a, u in self._locks.items() if u > now}

    def _control_message(self, data: bytes) -> None:
        doc = self.store.sealer.open(f"ctl:{self.replica}", data)
        if doc is None:
            self._forged("control")
            return
        now = time.time()
        self._seen_nonces = {n: t for n, t in self._seen_nonces.items() if now - t < 2 * _CONTROL_MAX_AGE_S}
        nonce = str(doc.get("n"))
        if doc.get("op") not in ("terminate", "watch") or abs(now - float(doc["t"])) > _CONTROL_MAX_AGE_S:
            return
        if nonce in self._seen_nonces:
            return
        self._seen_nonces[nonce] = now
        if doc["op"] == "watch":
            self._watch_leases = {s: t for s, t in self._watch_leases.items() if t > time.monotonic()}
            if str(doc["s"]) in self.local.sessions:
                self._watch_leases[str(doc["s"])] = time.monotonic() + WATCH_LEASE_S
            return
        self._on_terminate(str(doc["s"]), str(doc["by"]))


class _StoreRecords:
    """The store's record calls as a login's are: bounded, and none while the store is away."""

    def __init__(self, state: ReplicatedState) -> None:
        self.state = state
        self.store = state.store

    async def put_record(self, kind: RecordKind, key: str, doc: dict[str, Any], expires_at: float) -> None:
        await self.state._try(lambda: self.store.put_record(kind, key, doc, expires_at))

    async def record_entry(self, kind: RecordKind, key: str) -> Entry | None:
        return await self.state._try(lambda: self.store.record_entry(kind, key))

    async def take_record(self, kind: RecordKind, key: str) -> dict[str, Any] | None:
        return await self.state._try(lambda: self.store.take_record(kind, key))

    async def drop_record(self, kind: RecordKind, key: str) -> None:
        await self.state._try(lambda: self.store.drop_record(kind, key))

    async def claim_record(self, kind: RecordKind, key: str, expires_at: float) -> bool:
        return await self.state._try(lambda: self.store.claim_record(kind, key, expires_at))
