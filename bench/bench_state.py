"""Shared-state benchmark (issue 18): what Redis/Valkey under ``state:`` costs a login.

1. `ssh GW true` through a gateway with ``state:`` and one without, in one run, alternating, on
   loopback: medians and the difference (target: within +2 ms).
2. Logins per second across two replicas sharing one redis-server pinned to one core, and across
   two gateways without state: for comparison: asyncssh clients authenticate (and, with
   --sessions, run `true` on the resource) as fast as they can, alternating gateways; also the
   store's CPU and commands per login.
Run as root: .venv/bin/python -m bench.bench_state [--runs 40] [--seconds 10] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncssh
from tests.support.gateway import Client, GatewayProcess
from tests.support.redis import RedisServer

from bench.common import CIPHER, bench_env, cpu_seconds

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
            print(f"state on - off: {medians['on'] - medians['off']:+.1f} ms (target: within +2 ms)")

            pairs = {"without state": ["off", "off-2"], "with state": ["on", "on-2"]}
            kinds = [("alice", "authentications")] + ([("alice+web-1", "sessions")] if args.sessions else [])
            for login, what in kinds:
                for pair, names in pairs.items():
                    ports = [gateways[name].port for name in names]
                    calls0, cpu0 = store_stats(redis)
                    rate, done, failed = asyncio.run(
                        login_rate(ports, env.keys.alice, login, args.seconds, args.concurrency)
                    )
                    calls1, cpu1 = store_stats(redis)
                    print(f"{what} across two gateways {pair}: {rate:.0f}/s ({done} done, {failed} failed, "
                          f"{args.concurrency} at a time; target 200/s)")  # fmt: skip
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
