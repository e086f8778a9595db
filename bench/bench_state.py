"""Shared-state benchmark (issue 18): what Redis/Valkey under ``state:`` costs a login.

1. `ssh GW true` through a gateway with ``state:`` and one without, in one run, alternating, on
   loopback: medians and the difference (target: within +2 ms), the median of the per-round
   differences (less noisy), and the store calls a session login makes, timed in-process against
   the same redis-server (register + unregister, p50/p99): the part of the difference that is the
   store's and not the machine's.
2. Logins per second across two replicas sharing one redis-server pinned to one core, and across
   two gateways without state: for comparison: asyncssh clients authenticate (and, with
   --sessions, run `true` on the resource) as fast as they can, alternating gateways; also the
   store's CPU and commands per login, and the CPU each login costs the gateways and the clients
   (what bounds the rate on a 2-core machine that also runs the clients).
Run as root: .venv/bin/python -m bench.bench_state [--runs 40] [--seconds 10] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import asyncssh
from tests.support.gateway import Client, GatewayProcess
from tests.support.redis import RedisServer

from bench.common import CIPHER, bench_env, cpu_seconds, tree_cpu_seconds
from sshgate.state.base import LiveSession
from sshgate.state.redis_store import RedisStore, connect
from sshgate.state.replicated import ReplicatedState
from sshgate.state.seal import Sealer

HMAC = "bench-state-hmac-key-of-at-least-32-characters"


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


async def login_rate(
    ports: list[int], key: Path, login: str, seconds: float, concurrency: int
) -> tuple[float, int, int]:
    client_key = asyncssh.read_private_key(str(key))
    done = failed = 0
    deadline = time.monotonic() + seconds

    async def worker(index: int) -> None:
        nonlocal done, failed
        turn = index
        while time.monotonic() < deadline:
            turn += 1
            try:
                async with asyncssh.connect(
                    "127.0.0.1", ports[turn % len(ports)], username=login, client_keys=[client_key],
                    known_hosts=None, encryption_algs=[CIPHER], compression_algs=None, agent_path=None,
                    config=None,
                ) as conn:  # fmt: skip
                    if "+" in login:
                        await conn.run("true", check=True)
                done += 1
            except (OSError, asyncssh.Error):
                failed += 1

    start = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done / (time.monotonic() - start), done, failed


async def store_latency(url: str, runs: int) -> tuple[list[float], list[float]]:
    """What one session login asks of the store (register, then unregister), timed as the gateway
    makes the calls: the same client, sealer and bounds."""
    store = RedisStore(connect(url, 0.25), Sealer(HMAC), "sshgate-bench:", uuid.uuid4().hex)
    state = ReplicatedState(store, 0.25, 30, lambda _up: None)
    await state.start(lambda _sid, _by: False, lambda _fps: None)
    opened: list[float] = []
    closed: list[float] = []
    try:
        for _ in range(runs):
            session = LiveSession(uuid.uuid4().hex, state.replica, "alice@corp.com", "web-1", time.time())
            start = time.perf_counter()
            assert await state.open_session(session, 1000)
            opened.append(time.perf_counter() - start)
            start = time.perf_counter()
            await state.close_session(session)
            closed.append(time.perf_counter() - start)
    finally:
        await state.aclose()
    return opened, closed


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    return f"p50 {ordered[len(ordered) // 2] * 1e6:.0f} us, p99 {ordered[int(len(ordered) * 0.99)] * 1e6:.0f} us"


def store_stats(redis: RedisServer) -> tuple[int, float]:
    """Commands the store has run, and its CPU seconds."""
    info = redis.cli("INFO", "stats")
    calls = next(int(line.split(":")[1]) for line in info.splitlines() if line.startswith("total_commands_processed"))
    assert redis.process is not None
    return calls, cpu_seconds(redis.process.pid)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sessions", action="store_true", help="also open a session per login")
    args = parser.parse_args()
    with bench_env() as env:
        redis = RedisServer(env.root / "redis").start()
        assert redis.process is not None
        os.sched_setaffinity(redis.process.pid, {0})  # the store on one core
        state: dict[str, Any] = {"url": "ENV:SSHGATE_STATE_URL", "hmac_key": "ENV:SSHGATE_STATE_HMAC"}
        secrets = {"SSHGATE_STATE_URL": redis.url, "SSHGATE_STATE_HMAC": HMAC}
        gateways = {
            "off": GatewayProcess(env.root / "off", env.config()),
            "off-2": GatewayProcess(env.root / "off-2", env.config()),
            "on": GatewayProcess(env.root / "on", env.config(state=state), env=secrets),
            "on-2": GatewayProcess(env.root / "on-2", env.config(state=state), env=secrets),
        }
        try:
            for gateway in gateways.values():
                gateway.start(timeout=60)
            clients = {name: Client(gateways[name], env.keys.alice, env.root / f"c-{name}") for name in ("off", "on")}
            times: dict[str, list[float]] = {"off": [], "on": []}
            for _ in range(args.runs):
                for name, client in clients.items():
                    times[name].append(timed(client.ssh_argv("alice+web-1", "true")))
            medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
            for name, value in medians.items():
                print(f"ssh alice+web-1 true, state {name}: median {value:.1f} ms over {args.runs} runs")
            paired = statistics.median(on - off for on, off in zip(times["on"], times["off"], strict=True))
            print(f"state on - off: {medians['on'] - medians['off']:+.1f} ms; median of the per-round "
                  f"differences {paired * 1000:+.1f} ms (target: within +2 ms)")  # fmt: skip
            opened, closed = asyncio.run(store_latency(redis.url, 10 * args.runs))
            print(f"  the store's part, in-process: register {percentiles(opened)}; "
                  f"unregister {percentiles(closed)} (after the client has its exit status)")  # fmt: skip

            pairs = {"without state": ["off", "off-2"], "with state": ["on", "on-2"]}
            kinds = [("alice", "authentications")] + ([("alice+web-1", "sessions")] if args.sessions else [])
            for login, what in kinds:
                for pair, names in pairs.items():
                    ports = [gateways[name].port for name in names]
                    pids = [gateways[name].process.pid for name in names]  # type: ignore[union-attr]
                    calls0, cpu0 = store_stats(redis)
                    gw0, me0 = sum(map(tree_cpu_seconds, pids)), time.process_time()
                    rate, done, failed = asyncio.run(
                        login_rate(ports, env.keys.alice, login, args.seconds, args.concurrency)
                    )
                    gw1, me1 = sum(map(tree_cpu_seconds, pids)), time.process_time()
                    calls1, cpu1 = store_stats(redis)
                    print(f"{what} across two gateways {pair}: {rate:.0f}/s ({done} done, {failed} failed, "
                          f"{args.concurrency} at a time; target 200/s)")  # fmt: skip
                    gw_ms, client_ms = (gw1 - gw0) / max(done, 1) * 1000, (me1 - me0) / max(done, 1) * 1000
                    print(f"  CPU per login: gateways {gw_ms:.2f} ms, clients {client_ms:.2f} ms; "
                          f"{os.cpu_count()} cores at 100 % would allow {os.cpu_count() * 1000 / (gw_ms + client_ms):.0f}/s "
                          f"with these clients, {1000 / gw_ms:.0f}/s per gateway core")  # fmt: skip
                    if pair == "with state":
                        print(f"  store: {(calls1 - calls0) / max(done, 1):.1f} commands and "
                              f"{(cpu1 - cpu0) / max(done, 1) * 1e6:.0f} us CPU per login, "
                              f"{(cpu1 - cpu0) / args.seconds * 100:.1f} % of its core")  # fmt: skip
            print(f"store keys after the run: {redis.cli('DBSIZE')}")
        finally:
            for gateway in gateways.values():
                gateway.stop()
            redis.stop()


if __name__ == "__main__":
    main()
