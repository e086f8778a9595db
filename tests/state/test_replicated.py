"""Two replicas sharing a real redis-server: counters, caps, registry, bindings, outages."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sshgate.oidc.bindings import KeyBinding
from sshgate.state.base import LiveSession, OutputChunk, StateUnavailable
from tests.support.redis import RedisServer, silent_store

ADDR = "203.0.113.7"


def session(replica: Any, sid: str, user: str = "alice@corp.com") -> LiveSession:
    return LiveSession(sid, replica.state.replica, user, "web-1", time.time())


def binding(fingerprint: str, email: str = "alice@corp.com", ttl: float = 3600) -> KeyBinding:
    now = time.time()
    return KeyBinding(fingerprint, "okta", email, ("engineers",), now, now + ttl)


async def until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_failures_on_two_replicas_lock_the_address_on_both_until_it_expires(replicas: Any) -> None:
    a, b = await replicas(), await replicas()

    async def mirrors_live() -> bool:
        return bool(a.state._locks_live and b.state._locks_live)

    await until(mirrors_live)  # subscribed to lockout announcements: answers need no round trip
    results = []
    for i in range(4):
        results.append(await (a if i % 2 else b).state.failure(ADDR, 4, 2.0))
    assert results == [False, False, False, True]

    async def locked_on_both() -> bool:  # the announcement's way to the other replica
        return await a.state.locked_for(ADDR) > 0 and await b.state.locked_for(ADDR) > 0

    await until(locked_on_both, timeout=1.0)
    assert 1.0 < await a.state.locked_for(ADDR) <= 2.0
    assert 1.0 < await b.state.locked_for(ADDR) <= 2.0
    assert await a.state.locked_for("198.51.100.1") == 0
    await asyncio.sleep(2.1)
    assert await a.state.locked_for(ADDR) == 0
    assert await b.state.locked_for(ADDR) == 0


async def test_session_limit_counts_every_replica_and_races_never_exceed_it(replicas: Any) -> None:
    a, b = await replicas(), await replicas()
    assert await a.state.open_session(session(a, "s1"), 2)
    assert await b.state.open_session(session(b, "s2"), 2)
    assert not await a.state.open_session(session(a, "s3"), 2)
    assert not await b.state.open_session(session(b, "s4"), 2)
    assert await b.state.open_session(session(b, "other", user="john@corp.com"), 2)
    await a.state.close_session(session(a, "s1"))
    assert await b.state.open_session(session(b, "s5"), 2)
    listed = {(s.session_id, s.replica) for s in await a.state.sessions()}
    assert listed == {("s2", b.state.replica), ("s5", b.state.replica), ("other", b.state.replica)}
    # Ten logins at once over both replicas for a user with no session: exactly the limit get in.
    attempts = [
        (a if i % 2 else b).state.open_session(session(a if i % 2 else b, f"race{i}", "bob@corp.com"), 3)
        for i in range(10)
    ]
    assert sum(await asyncio.gather(*attempts)) == 3


async def test_a_replica_that_stops_heartbeating_frees_its_sessions_after_the_ttl(replicas: Any) -> None:
    a, b = await replicas(session_ttl_s=3), await replicas(session_ttl_s=3)
    assert await a.state.open_session(session(a, "s1"), 1)
    assert not await b.state.open_session(session(b, "s2"), 1)
    for task in a.state._tasks:  # the replica freezes (as after kill -9): no more heartbeats
        task.cancel()
    started = time.monotonic()
    await until(lambda: b.state.open_session(session(b, "s2"), 1), timeout=8)
    assert 1.5 < time.monotonic() - started < 6


async def test_forged_records_lock_nothing_bind_nothing_and_take_no_slot(
    replicas: Any, redis_server: RedisServer
) -> None:
    a = await replicas()
    honest = await replicas()
    forger = await replicas(key="another-key-of-at-least-32-characters!!")
    for _ in range(5):
        await forger.state.failure(ADDR, 3, 60)
    assert await forger.state.locked_for(ADDR) > 0  # the forger's own view, under its own key
    assert await a.state.locked_for(ADDR) == 0
    assert not await a.state.failure(ADDR, 3, 60)
    forged = '0123.{"a":"' + ADDR + '","until":9999999999}'
    redis_server.cli("SET", f"sg:lock:{ADDR}", forged, "EX", "60")
    redis_server.cli("PUBLISH", "sg:locks", f"{ADDR} {forged}")
    await asyncio.sleep(0.2)
    assert await a.state.locked_for(ADDR) == 0
    a.state._locks_live = False  # asked of the store itself, the forged record locks nobody either
    assert await a.state.locked_for(ADDR) == 0
    await forger.state.bind(binding("SHA256:forged"))
    assert await a.state.binding("SHA256:forged") is None
    assert await forger.state.open_session(session(forger, "f1"), 1)
    assert await a.state.open_session(session(a, "s1"), 1)  # the forged entry took no slot
    assert [s.session_id for s in await honest.state.sessions()] == ["s1"]


async def test_bindings_reach_every_replica_and_revocations_within_a_second(replicas: Any) -> None:
    a, b = await replicas(), await replicas()
    await a.state.bind(binding("SHA256:k1"))
    await a.state.bind(binding("SHA256:k2", email="john@corp.com"))
    found = await b.state.binding("SHA256:k1")
    assert found is not None and (found.email, found.groups) == ("alice@corp.com", ("engineers",))
    await asyncio.sleep(0.6)  # b's last copy now holds both
    await a.state.record_step_up("okta", "alice@corp.com", 1234.5)
    assert await b.state.step_up_at("okta", "alice@corp.com") == 1234.5
    started = time.monotonic()
    gone = await a.state.revoke(email="alice@corp.com")
    assert [g.fingerprint for g in gone] == ["SHA256:k1"]
    while not b.revoked:
        assert time.monotonic() - started < 1.0
        await asyncio.sleep(0.02)
    assert b.revoked == [{"SHA256:k1"}]
    assert await b.state.binding("SHA256:k1") is None
    assert await b.state.step_up_at("okta", "alice@corp.com") is None
    assert [x.fingerprint for x in await b.state.bindings()] == ["SHA256:k2"]


async def test_a_revoked_binding_written_back_into_the_store_stays_revoked(
    replicas: Any, redis_server: RedisServer
) -> None:
    """Write access to the store binds no key to anyone: not even by writing back the old
    sealed value of a binding that was revoked, with or without its tombstone."""
    a, b = await replicas(), await replicas()
    await a.state.bind(binding("SHA256:stolen"))
    old = redis_server.cli("HGET", "sg:bindings", "SHA256:stolen")
    await b.state.revoke(fingerprint="SHA256:stolen")
    await until(lambda: _is(b.state.binding("SHA256:stolen"), None))
    redis_server.cli("HSET", "sg:bindings", "SHA256:stolen", old)  # the replay
    redis_server.cli("INCR", "sg:bindings:version")
    await asyncio.sleep(0.6)  # every replica has re-read the bindings
    late = await replicas()  # started after the revocation: knows it from the tombstone
    for replica in (a, b, late):
        assert await replica.state.binding("SHA256:stolen") is None
        assert "SHA256:stolen" not in [x.fingerprint for x in await replica.state.bindings()]
    redis_server.cli("DEL", "sg:revoked")  # the tombstone deleted too: the replicas that saw it go remember
    for replica in (a, b, late):
        assert await replica.state.binding("SHA256:stolen") is None
    await asyncio.sleep(0.01)
    await a.state.bind(binding("SHA256:stolen"))  # the person signs in again: a new binding counts
    for replica in (a, b, late):
        found = await replica.state.binding("SHA256:stolen")
        assert found is not None and found.email == "alice@corp.com"


async def test_a_binding_still_being_written_when_the_bindings_are_read_is_no_revocation(
    replicas: Any,
) -> None:
    a = await replicas()
    write, release = a.state.store.bind, asyncio.Event()

    async def slow_bind(bindings: Any) -> None:  # the store runs the write after the read below
        await release.wait()
        await write(bindings)

    a.state.store.bind = slow_bind
    binding_task = asyncio.create_task(a.state.bind(binding("SHA256:fresh")))
    await asyncio.sleep(0.05)
    await a.state._sync_bindings()  # reads the store before the write lands
    release.set()
    await binding_task
    assert not a.revoked  # its connections were not closed as revoked
    found = await a.state.binding("SHA256:fresh")
    assert found is not None and found.email == "alice@corp.com"


async def _is(value: Any, expected: Any) -> bool:
    return await value is expected


async def test_terminate_reaches_the_owning_replica_and_output_crosses_replicas(replicas: Any) -> None:
    a, b = await replicas(), await replicas()
    assert await a.state.open_session(session(a, "s1"), 5)
    assert await b.state.terminate("s1", "admin@corp.com")
    await until(lambda: asyncio.sleep(0, bool(a.terminated)))
    assert a.terminated == [("s1", "admin@corp.com")] and b.terminated == []
    assert not await b.state.terminate("nobody", "admin@corp.com")

    received: list[OutputChunk] = []

    async def watch() -> None:
        async for chunk in b.state.subscribe_output("s1"):
            received.append(chunk)
            if chunk.data.endswith(b"end"):
                return

    assert not a.state.watched("s1")  # nobody watches: the relay publishes nothing
    watcher = asyncio.create_task(watch())
    await until(lambda: asyncio.sleep(0, a.state.watched("s1")))  # b's lease reached the owner
    await asyncio.sleep(0.2)  # b's subscription is in place
    for t, data in enumerate((b"hello ", b"\x00\xff binary ", b"end")):
        a.state.publish_output("s1", OutputChunk(2, t / 10, data))
    await asyncio.wait_for(watcher, 5)
    assert b"".join(c.data for c in received) == b"hello \x00\xff binary end"
    assert [(c.channel, c.t) for c in received] == [(2, 0.0), (2, 0.1), (2, 0.2)]


async def test_store_down_falls_back_to_each_replica_then_converges(
    replicas: Any, redis_server: RedisServer
) -> None:
    a, b = await replicas(), await replicas()
    assert await a.state.open_session(session(a, "before-a"), 2)
    redis_server.stop()
    started = time.monotonic()
    assert await b.state.locked_for(ADDR) == 0  # the first call may wait, within the bound
    assert time.monotonic() - started < 0.4
    await until(lambda: asyncio.sleep(0, not a.state.available and not b.state.available))
    assert a.gauge[-1] is False and b.gauge[-1] is False
    # Each replica alone: b has no session of alice's, a has one.
    assert await b.state.open_session(session(b, "down-b1"), 2)
    assert await b.state.open_session(session(b, "down-b2"), 2)
    assert not await b.state.open_session(session(b, "down-b3"), 2)
    await a.state.close_session(session(a, "before-a"))
    assert await a.state.open_session(session(a, "down-a1"), 2)
    for _ in range(3):
        await a.state.failure(ADDR, 3, 60)
    assert await a.state.locked_for(ADDR) > 0 and await b.state.locked_for(ADDR) == 0
    timings = []
    for _ in range(20):
        t0 = time.monotonic()
        await b.state.locked_for(ADDR)
        timings.append(time.monotonic() - t0)
    # No waiting once the store is known to be away: no reconnect attempt, no timeout (100 ms,
    # not 10: a test process descheduled on a loaded two-worker run is not the gateway waiting).
    assert max(timings) < 0.1

    redis_server.start()
    await until(lambda: asyncio.sleep(0, a.state.available and b.state.available), timeout=10)
    assert a.gauge[-1] is True
    # Converged: the registry holds exactly the live sessions, the lockout is everyone's.
    listed = {s.session_id for s in await b.state.sessions()}
    assert listed == {"down-b1", "down-b2", "down-a1"}
    assert not await a.state.open_session(session(a, "after"), 3)
    assert await b.state.locked_for(ADDR) > 0


async def test_a_hung_store_delays_no_call_beyond_the_bound(replicas: Any) -> None:
    with silent_store() as port:
        from tests.state.conftest import Replica

        replica = Replica(f"redis://127.0.0.1:{port}/0", timeout_ms=200)
        started = time.monotonic()
        await replica.start()
        assert time.monotonic() - started < 1.5
        try:
            worst = 0.0
            for i in range(10):
                t0 = time.monotonic()
                await replica.state.locked_for(ADDR)
                await replica.state.failure(ADDR, 100, 60)
                assert await replica.state.open_session(session(replica, f"s{i}"), 100)
                worst = max(worst, time.monotonic() - t0)
            assert worst < 0.3
            assert replica.gauge[-1] is False
            try:
                await replica.state.terminate("elsewhere", "admin@corp.com")
                raise AssertionError("terminate of another replica's session needs the store")
            except StateUnavailable:
                pass
            try:  # a mark is never made in a replica's copy
                await replica.state.claim_record("signin", "k", time.time() + 60)
                raise AssertionError("a claim needs the store")
            except StateUnavailable:
                pass
        finally:
            await replica.state.aclose()


async def test_without_the_store_bindings_come_from_the_last_copy_for_a_bounded_time(
    replicas: Any, redis_server: RedisServer, monkeypatch: Any
) -> None:
    import sshgate.state.replicated as replicated

    monkeypatch.setattr(replicated, "CACHED_BINDINGS_S", 1.5)
    a, b = await replicas(), await replicas()
    await a.state.bind(binding("SHA256:k1"))
    await asyncio.sleep(0.6)  # b's probe has taken its copy
    redis_server.stop()
    found = await b.state.binding("SHA256:k1")
    assert found is not None and found.email == "alice@corp.com"
    await b.state.bind(binding("SHA256:new", email="john@corp.com"))  # remembered, written later
    await asyncio.sleep(1.6)
    assert await b.state.binding("SHA256:k1") is None  # too long without the store
    redis_server.start()
    await until(lambda: asyncio.sleep(0, a.state.available and b.state.available), timeout=10)
    assert (await a.state.binding("SHA256:new")) is not None  # replayed when the store came back


async def test_a_claim_is_won_by_one_replica_and_expires(replicas: Any) -> None:
    a, b = await replicas(), await replicas()
    later = time.time() + 60
    for n in range(5):
        won = await asyncio.gather(a.state.claim_record("signin", f"k{n}", later),
                                   b.state.claim_record("signin", f"k{n}", later))  # fmt: skip
        assert sorted(won) == [False, True]
    assert await b.state.get_record("signin", "k0") == {}
    assert await a.state.claim_record("signin", "short", time.time() + 0.2)
    await asyncio.sleep(0.4)
    assert await b.state.claim_record("signin", "short", later)  # the first one expired
    assert not await a.state.claim_record("signin", "past", time.time() - 1)  # never stored
