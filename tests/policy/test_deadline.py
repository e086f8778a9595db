"""The embedded engine's deadline: a slow rule denies at ``timeout_ms`` and stalls nobody else.

The slow rule really is slow (millions of products in a comprehension); nothing is faked. Engine
processes are observed from outside, in /proc, as an operator would see them.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from sshgate.config import Policies
from sshgate.policy import pool as pool_module
from sshgate.policy.decision import Decision
from sshgate.policy.embedded import EmbeddedDecisionPoint
from sshgate.policy.loader import ReloadableDecisionPoint, build_decision_point
from sshgate.policy.sources import PolicyLoadError
from tests.support.engines import engine_processes

SLOW_POLICY = """package formal.v2

import rego.v1

# Two million products for the slow users: seconds of work, whatever the timeout says.
session := {"action": "allow"} if {
\tstartswith(input.user.email, "slow")
\tcount([x | some i in numbers.range(1, 6000); some j in numbers.range(1, 1000); x := i * j]) > 0
}

session := {"action": "allow"} if not startswith(input.user.email, "slow")

# A value far over the size a worker may answer with, and one too big to build at all.
request := {"action": "allow", "pad": concat("", [s | some _ in numbers.range(1, 200000); s := "0123456789"])} if {
\tinput.request.kind == "huge"
}

request := {"action": "allow"} if {
\tinput.request.kind == "bomb"
\tcount(numbers.range(1, 40000000)) > 0
}
"""
SLOW = {"user": {"type": "human", "email": "slow@corp.com"}}
SLOW_TOO = {"user": {"type": "human", "email": "slow-too@corp.com"}}
FAST = {"user": {"type": "human", "email": "alice@corp.com"}}


def templates() -> set[int]:
    """The engine processes this test process started."""
    return set(engine_processes(os.getpid()))


def worker_pids() -> set[int]:
    """The workers forked by this process's templates."""
    return {pid for workers in engine_processes(os.getpid()).values() for pid in workers}


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def slow_point(tmp_path: Path, timeout_ms: int = 300) -> AsyncIterator[EmbeddedDecisionPoint]:
    (tmp_path / "slow.rego").write_text(SLOW_POLICY)
    point = await build_decision_point(Policies(paths=[str(tmp_path)], timeout_ms=timeout_ms))
    assert isinstance(point, EmbeddedDecisionPoint)
    try:
        yield point
    finally:
        await point.aclose()


async def recovered(point: EmbeddedDecisionPoint) -> None:
    """Decisions are made again once the killed workers' replacements have compiled."""
    for _ in range(50):
        if (await point.decide("session", FAST)).allowed:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the pool did not recover")


async def timed(decision: Any) -> tuple[Decision, float]:
    start = time.monotonic()
    result = await decision
    return result, time.monotonic() - start


async def test_slow_rule_denies_at_the_deadline_while_others_are_served(tmp_path: Path) -> None:
    async with slow_point(tmp_path) as point:
        before = worker_pids()
        assert len(before) == pool_module.POOL_SIZE
        lags: list[float] = []

        async def ticker() -> None:
            while True:
                start = time.monotonic()
                await asyncio.sleep(0.005)
                lags.append(time.monotonic() - start - 0.005)

        tick = asyncio.create_task(ticker())
        slow = asyncio.create_task(timed(point.decide("session", SLOW)))
        await asyncio.sleep(0.02)
        fast = [await timed(point.decide("session", FAST)) for _ in range(5)]
        assert not slow.done()
        denied, took = await slow
        tick.cancel()
        assert all(d.allowed for d, _ in fast)
        assert max(t for _, t in fast) < 0.25, fast
        assert (denied.action, denied.message) == ("block", "policy unavailable")
        assert denied.reason == "policy timeout: data.formal.v2.session did not finish within 300 ms"
        assert 0.3 <= took < 1.0
        # The event loop kept running the whole time (it used to stop for the rule's seconds).
        assert max(lags) < 0.25, max(lags)
        # The stuck worker is gone, a fresh one takes its place, and decisions go on.
        await until(lambda: len(worker_pids()) == pool_module.POOL_SIZE and worker_pids() != before)
        assert len(before - worker_pids()) == 1
        await recovered(point)


async def test_one_identity_holds_one_worker_however_many_decisions_it_asks(tmp_path: Path) -> None:
    async with slow_point(tmp_path) as point:
        slow = [asyncio.create_task(timed(point.decide("session", SLOW))) for _ in range(4)]
        await asyncio.sleep(0.02)
        fast = [await timed(point.decide("session", FAST)) for _ in range(5)]
        # With two of the slow user's rules on the two workers, these would wait for a deadline.
        assert all(d.allowed for d, _ in fast) and max(t for _, t in fast) < 0.25, fast
        for denied, _ in await asyncio.gather(*slow):
            assert denied.reason.startswith("policy timeout: "), denied
        await recovered(point)


async def test_the_slow_rule_really_takes_seconds(tmp_path: Path) -> None:
    """Still running after 2 s: what the deadline saves everyone from."""
    async with slow_point(tmp_path, timeout_ms=2000) as point:
        denied, took = await timed(point.decide("session", SLOW))
    assert denied.reason == "policy timeout: data.formal.v2.session did not finish within 2000 ms"
    assert took >= 2.0


async def test_with_every_worker_stuck_a_waiting_decision_gets_the_next_fresh_one(tmp_path: Path) -> None:
    async with slow_point(tmp_path) as point:
        # Asked together: the fast decision's deadline passes with the stuck ones', while it waits.
        stuck = [asyncio.create_task(point.decide("session", who)) for who in (SLOW, SLOW_TOO)]
        await asyncio.sleep(0)  # they take both workers
        waited, took = await timed(point.decide("session", FAST))
        assert waited.reason == "policy timeout: no policy engine was free within 300 ms"
        assert 0.3 <= took < 1.0
        assert all(not d.allowed for d in await asyncio.gather(*stuck))
        await recovered(point)
        # Asked later: served once the stuck workers are killed and forked anew, before its deadline.
        stuck = [asyncio.create_task(point.decide("session", who)) for who in (SLOW, SLOW_TOO)]
        await asyncio.sleep(0.25)
        served, took = await timed(point.decide("session", FAST))
        assert served.allowed and took >= 0.02, (served, took)
        assert all(not d.allowed for d in await asyncio.gather(*stuck))


async def test_past_the_waiting_bound_decisions_deny_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_module, "MAX_WAITING", 1)
    async with slow_point(tmp_path) as point:
        stuck = [asyncio.create_task(point.decide("session", who)) for who in (SLOW, SLOW_TOO)]
        waiting = asyncio.create_task(point.decide("session", FAST))
        await asyncio.sleep(0.02)
        refused, took = await timed(point.decide("session", FAST))
        assert took < 0.15  # at once: waiting would take the 300 ms deadline (a loaded CI box may stall ~50 ms)
        assert refused.reason == (
            "policy evaluation failed: every policy engine is busy and 1 evaluations are waiting"
        )
        assert not any(d.allowed for d in await asyncio.gather(*stuck, waiting))


async def test_a_caller_that_gives_up_does_not_leave_the_rule_running(tmp_path: Path) -> None:
    async with slow_point(tmp_path) as point:
        before = worker_pids()
        gone = asyncio.create_task(point.decide("session", SLOW))
        await asyncio.sleep(0.05)
        gone.cancel()
        # Killed at the deadline all the same, and replaced.
        await until(lambda: len(before - worker_pids()) == 1, timeout=2.0)
        await recovered(point)


async def test_a_worker_that_dies_or_answers_too_much_denies_and_is_replaced(tmp_path: Path) -> None:
    async with slow_point(tmp_path, timeout_ms=5000) as point:
        bomb, took = await timed(point.decide("request", {"request": {"kind": "bomb"}}))
        # The worker's memory cap ends the rule long before the deadline.
        assert took < 2.0
        assert bomb.reason == "policy evaluation failed: policy engine process ended"
        huge = await point.decide("request", {"request": {"kind": "huge"}})
        assert huge.reason == (
            f"policy evaluation failed: policy engine process answered more than {pool_module.MAX_REPLY} bytes"
        )
        assert (bomb.message, huge.message) == ("policy unavailable", "policy unavailable")
        await recovered(point)


async def test_a_rule_that_never_compiles_is_refused_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every rule is evaluated once without input at load; this one takes seconds then (six million
    # products, as the slow rule above: two million finished within the bound on a quiet machine).
    monkeypatch.setattr(pool_module, "START_TIMEOUT_S", 1.0)
    (tmp_path / "p.rego").write_text(
        "package formal.v2\nimport rego.v1\n"
        "n := count([x | some i in numbers.range(1, 6000); some j in numbers.range(1, 1000); x := i * j])\n"
    )
    with pytest.raises(PolicyLoadError, match=r"did not compile within 1 s"):
        point = await build_decision_point(Policies(paths=[str(tmp_path)]))
        await point.aclose()  # it loaded after all: end its engines before failing, or they outlive the test
    await until(lambda: not templates(), timeout=2.0)


async def test_reload_swaps_every_worker_and_ends_the_old_ones(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "p.rego"
    policy.write_text('package formal.v2\nsession := {"action": "block", "message": "old"}\n')
    point = await ReloadableDecisionPoint.open(Policies(paths=[str(tmp_path)]))
    try:
        old = worker_pids()
        assert (await point.decide("session", FAST)).action == "block"
        policy.write_text('package formal.v2\nsession := {"action": "allow"}\n')
        await point.reload()
        assert (await point.decide("session", FAST)).allowed
        new = worker_pids()
        assert len(new) == pool_module.POOL_SIZE and not new & old
    finally:
        await point.aclose()
    assert not templates() and not worker_pids()
    # Engines are dropped on the thread that made them: regorus has nothing to complain about.
    assert "unsendable" not in capfd.readouterr().err
