"""Workers benchmark (issue 7): 1 vs 2 gateway processes on one port, in one run on loopback.

Aggregate bulk throughput with two concurrent downloads, and the connection rate (new exec
sessions per second, 8 at a time, until the first failure or 10 s).
Run as root: .venv/bin/python -m bench.bench_workers [--size-mb 512]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time
from pathlib import Path

import asyncssh
from tests.support.gateway import Client, GatewayProcess
from tests.support.net import free_port

from bench.common import bench_env, connect


def parallel_download(client: Client, size_mb: int, streams: int) -> float:
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            client.ssh_argv("alice+web-1", f"head -c {size_mb}M /dev/zero"), stdout=subprocess.DEVNULL
        )
        for _ in range(streams)
    ]
    for proc in procs:
        assert proc.wait() == 0
    return streams * size_mb / (time.perf_counter() - start)


async def connection_rate(
    port: int, key: Path, seconds: float = 10.0, concurrency: int = 8
) -> tuple[float, int]:
    client_key = asyncssh.read_private_key(str(key))
    done = 0
    failed = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done, failed
        while time.monotonic() < deadline and not failed:
            try:
                async with connect(port, client_key) as conn:
                    result = await conn.run("true", check=True)
                    assert result.exit_status == 0
                done += 1
            except (OSError, asyncssh.Error):
                failed += 1

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.monotonic() - start), failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=512)
    args = parser.parse_args()
    with bench_env() as env:
        print(f"{'workers':<10}{'2 downloads MB/s':>18}{'sessions/s':>12}{'failed':>8}")
        for workers in (1, 2):
            listen = {"host": "127.0.0.1", "port": free_port()}
            gw = GatewayProcess(env.root / f"gw{workers}", env.config(workers=workers, listen=listen)).start()
            try:
                time.sleep(1)
                client = Client(gw, env.keys.alice, env.root / f"client{workers}")
                throughput = parallel_download(client, args.size_mb, 2)
                rate, failed = asyncio.run(connection_rate(gw.port, env.keys.alice))
                print(f"{workers:<10}{throughput:>18.0f}{rate:>12.1f}{failed:>8}")
            finally:
                gw.stop()


if __name__ == "__main__":
    main()
