"""sftp throughput with a Rego ``request`` rule loaded vs none (issue 3), in one run on loopback.

With a request rule every client packet goes through the sftp gate (mutations wait for a policy
decision); without one the relay only observes. Target: >= 0.9x.
Run as root: .venv/bin/python -m bench.bench_sftp_policy [--size-mb 256]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

from tests.support.gateway import Client, GatewayProcess

from bench.common import bench_env

POLICIES = str(Path(__file__).parents[1] / "policies")


def sftp(client: Client, batch: str) -> float:
    """Seconds one sftp batch takes through the gateway."""
    start = time.perf_counter()
    argv = ["sftp", "-F", str(client.config), "-o", "User=alice+web-1", "-b", "-", "gw"]
    subprocess.run(argv, input=batch.encode(), check=True, capture_output=True)
    return time.perf_counter() - start


def transfer(client: Client, local: Path, remote: str) -> tuple[float, float]:
    """Seconds for one sftp put and one get of ``local``."""
    return sftp(client, f"put {local} {remote}\n"), sftp(client, f"get {remote} {local}.back\nrm {remote}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=256)
    args = parser.parse_args()
    with bench_env() as env:
        local = env.root / "payload.bin"
        local.write_bytes(os.urandom(args.size_mb << 20))
        remote = f"/home/sgtest/sshgate-bench-{os.getpid()}.bin"
        results = {}
        for name, policies in (("no policy", {}), ("request rule", {"paths": [POLICIES]})):
            gw = GatewayProcess(env.root / name.replace(" ", "-"), env.config(policies=policies)).start()
            try:
                client = Client(gw, env.keys.alice, env.root / f"client-{len(results)}")
                put, get = transfer(client, local, remote)
                results[name] = (args.size_mb / put, args.size_mb / get)
                print(f"{name:<14} put {results[name][0]:6.0f} MB/s   get {results[name][1]:6.0f} MB/s")
            finally:
                gw.stop()
        base, gated = results["no policy"], results["request rule"]
        print(
            f"request rule / none: put {gated[0] / base[0]:.2f}x, get {gated[1] / base[1]:.2f}x (target >= 0.9x)"
        )


if __name__ == "__main__":
    main()
