"""workers: N without state: two workers and their supervisor, linked as the gateway links them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sshgate.state.base import LiveSession, OutputChunk
from sshgate.state.hosted import StateHost, WorkerState


class Worker:
    def __init__(self, host: StateHost, data_dir: Path) -> None:
        self.gauge: list[bool] = []
        self.state = WorkerState(host.new_worker().detach(), str(data_dir), self.gauge.append)
        self.terminated: list[tuple[str, str]] = []

    async def start(self) -> Worker:
        await self.state.start(lambda s, by: bool(self.terminated.append((s, by))) or True, lambda _: None)
        return self

    def session(self, sid: str, user: str = "alice@corp.com") -> LiveSession:
        return LiveSession(sid, self.state.replica, user, "web-1", time.time())


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[tuple[StateHost, Worker, Worker]]:
    host = StateHost()
    a = await Worker(host, tmp_path).start()
    b = await Worker(host, tmp_path).start()
    yield host, a, b
    for worker in (a, b):
        await worker.state.aclose()
    await host.aclose()


async def test_workers_share_lockouts_and_session_caps(workers: Any) -> None:
    _, a, b = workers
    results = [await (a if i % 2 else b).state.failure("10.1.1.1", 3, 2.0) for i in range(3)]
    assert results == [False, False, True]
    assert await a.state.locked_for("10.1.1.1") > 1.5 and await b.state.locked_for("10.1.1.1") > 1.5
    assert await a.state.open_session(a.session("s1"), 2)
    assert await b.state.open_session(b.session("s2"), 2)
    assert not await a.state.open_session(a.session("s3"), 2)
    assert {s.session_id for s in await b.state.sessions()} == {"s1", "s2"}
    assert await b.state.terminate("s1", "admin@corp.com")
    deadline = time.monotonic() + 2
    while not a.terminated and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert a.terminated == [("s1", "admin@corp.com")]


async def test_a_dead_worker_frees_its_slots_and_output_crosses_workers(workers: Any) -> None:
    _, a, b = workers
    assert await a.state.open_session(a.session("s1"), 1)
    received: list[OutputChunk] = []

    async def watch() -> None:
        async for chunk in b.state.subscribe_output("s1"):
            received.append(chunk)
            return

    assert not a.state.watched("s1")  # nobody watches: the relay publishes nothing
    watcher = asyncio.create_task(watch())
    deadline = time.monotonic() + 2
    while not a.state.watched("s1"):  # the supervisor tells the owning worker
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    a.state.publish_output("s1", OutputChunk(1, 0.25, b"live bytes"))
    await asyncio.wait_for(watcher, 2)
    assert received == [OutputChunk(1, 0.25, b"live bytes")]
    deadline = time.monotonic() + 2
    while a.state.watched("s1"):  # the watcher left: publishing stops
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await a.state.aclose()  # the worker's end of the pair closes, as when it dies
    deadline = time.monotonic() + 2
    while not await b.state.open_session(b.session("s2"), 1):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_web_records_live_in_the_supervisor_and_single_use_ones_are_taken_once(
    workers: Any, tmp_path: Path
) -> None:
    """A restarted worker 0 (the web app's) finds the sessions it served; links spend once."""
    host, a, b = workers
    later = time.time() + 60
    await a.state.put_record("session", "k1", {"email": "a@corp.com"}, later)
    await a.state.put_record("link", "k2", {"email": "a@corp.com"}, later, once=True)
    assert await b.state.get_record("session", "k1") == {"email": "a@corp.com"}
    assert await a.state.get_record("session", "nope") is None
    taken = await asyncio.gather(a.state.take_record("link", "k2"), b.state.take_record("link", "k2"))
    assert sorted(t is not None for t in taken) == [False, True]
    claimed = await asyncio.gather(a.state.claim_record("signin", "k4", later), b.state.claim_record("signin", "k4", later))
    assert sorted(claimed) == [False, True] and not await a.state.claim_record("signin", "k4", later)
    await b.state.drop_record("session", "k1")
    assert await a.state.get_record("session", "k1") is None  # not revived from a's copy
    await a.state.put_record("session", "gone", {"email": "a@corp.com"}, time.time() - 1)
    assert await b.state.get_record("session", "gone") is None
    with pytest.raises(ValueError):
        host.records.put("cookie", "k", {}, later)  # an unknown kind: refused, not a new bucket
    restarted = await Worker(host, tmp_path).start()
    try:
        await a.state.put_record("session", "k3", {"email": "a@corp.com"}, later)
        assert await restarted.state.get_record("session", "k3") == {"email": "a@corp.com"}
    finally:
        await restarted.state.aclose()
