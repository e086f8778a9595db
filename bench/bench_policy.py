"""Session-decision latency of the embedded engine with the shipped policies (target p99 ≤ 200 µs).

Run: ``.venv/bin/python bench/bench_policy.py [N]``. Each sample is one ``await decide(...)`` as the
gateway makes it (input to JSON, hand-off to a worker process, evaluation, reply, decision
mapping) on uvloop, rotating through allowed and blocked sessions. For reference it also times
the same evaluation made in-process on the calling thread (what the gateway did before worker
processes): the difference is what the hand-off costs. The two paths alternate in blocks of 500,
so load from other processes hits both alike.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from sshgate.config import Policies
from sshgate.policy.embedded import PACKAGE
from sshgate.policy.loader import ReloadableDecisionPoint
from sshgate.policy.mapping import to_decision
from sshgate.policy.rego import RegorusEngine
from sshgate.policy.sources import load_modules

POLICIES = Path(__file__).resolve().parents[1] / "policies"
TARGET_P99_US = 200


def _inputs() -> list[dict[str, Any]]:
    base: dict[str, Any] = {
        "stage": "session",
        "user": {"type": "human", "email": "alice@corp.com", "provider": "formal", "login": "alice"},
        "native_user": "ubuntu",
        "native_user_source": "group",
        "resource": {"name": "web-1", "type": "ssh", "hostname": "10.0.0.5", "port": 22, "tags": {}},
        "connection": {
            "client_ip": "203.0.113.7",
            "auth_method": "publickey",
            "request": "shell",
            "pty": True,
        },
        "time": {"unix": 1789552800, "rfc3339": "2026-09-16T10:00:00Z"},
    }
    ec2 = {"instance_id": "i-1", "region": "eu-west-1", "account_id": "1", "state": "running"}
    return [
        {**base, "user": {**base["user"], "groups": ["dev"]}},
        {**base, "user": {**base["user"], "email": "john@corp.com", "groups": []}, "native_user": "devops"},
        {**base, "user": {**base["user"], "groups": ["contractors"]}, "time": {"unix": 1789812000}},
        {**base, "user": {**base["user"], "groups": ["dev"]}, "ec2": {**ec2, "tags": {"env": "prod"}}},
    ]


Decide = Callable[[dict[str, Any]], Awaitable[str]]
BLOCK = 500


async def _measure(paths: dict[str, Decide], count: int) -> dict[str, list[float]]:
    inputs = _inputs()
    for decide in paths.values():
        for doc in inputs * 50:  # warm caches
            await decide(doc)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    actions = {"allow": 0, "block": 0}
    for block in range(0, count, BLOCK):
        for name, decide in paths.items():
            for i in range(block, min(count, block + BLOCK)):
                start = time.perf_counter()
                action = await decide(inputs[i % len(inputs)])
                samples[name].append(time.perf_counter() - start)
                actions[action] += 1
    assert actions["allow"] and actions["block"], actions
    return {name: sorted(values) for name, values in samples.items()}


def _report(name: str, samples: list[float]) -> float:
    p50 = samples[len(samples) // 2] * 1e6
    p99 = samples[int(len(samples) * 0.99)] * 1e6
    mean = statistics.fmean(samples) * 1e6
    print(f"{name:<34} p50 {p50:6.1f} µs  p99 {p99:6.1f} µs  mean {mean:6.1f} µs")
    return p99


async def _run(count: int) -> float:
    engine = RegorusEngine.compile(load_modules([str(POLICIES)]))

    async def on_thread(doc: dict[str, Any]) -> str:
        start = time.perf_counter()
        value = engine.eval_rule(f"{PACKAGE}.session", doc)
        return to_decision("session", value, "allow", time.perf_counter() - start).action

    point = await ReloadableDecisionPoint.open(Policies(paths=[str(POLICIES)]))

    async def in_worker(doc: dict[str, Any]) -> str:
        return (await point.decide("session", doc)).action

    try:
        print(f"session decisions: {count} each, shipped policies")
        found = await _measure({"loop": on_thread, "worker": in_worker}, count)
    finally:
        await point.aclose()
    _report("in-process, on the loop (reference)", found["loop"])
    p99 = _report("worker process (the gateway's path)", found["worker"])
    print(f"target: worker p99 ≤ {TARGET_P99_US} µs")
    return p99


def main(count: int = 10_000) -> int:
    p99 = uvloop.run(_run(count))
    return 0 if p99 * 1e6 <= TARGET_P99_US else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
