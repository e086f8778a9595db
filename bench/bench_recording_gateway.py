"""Recording on vs off through the gateway (issue 4), interleaved in one run on loopback.

Exec streaming text (`yes`) and an scp upload, each through a gateway that records (the product)
and through one started with a recorder that keeps nothing (bench only: sshgate itself cannot
turn recording off). Both gateways run side by side and each round measures both, so load from
other work on the machine hits on and off alike; ratios are per round, reported as a range.
Gateway CPU counts the gateway process (recording's flush thread included); "all"
is every process on the machine while the transfer ran: on this 2-core VM exec `yes` is bound by
it, so on/off cannot exceed all(off) / all(on) there.
Targets (issue 12): exec `yes` >= 0.85x, scp >= 0.97x.
Run as root: .venv/bin/python -m bench.bench_recording_gateway [--size-mb 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.gateway import Client, GatewayProcess

from bench.common import UnrecordedGateway, bench_env, machine_busy_seconds, tree_cpu_seconds

SCP_TARGET = Path("/tmp/sshgate-bench-scp.bin")


def settle(pid: int) -> None:
    """Wait until the gateway is idle: what a session leaves behind (its recording's last writes,
    the manifest's hashes) is its own cost, not the next measurement's."""
    while True:
        cpu = tree_cpu_seconds(pid)
        time.sleep(0.3)
        if tree_cpu_seconds(pid) - cpu < 0.03:
            return


def timed(pid: int, run: Callable[[], object], megabytes: float) -> tuple[float, float, float]:
    """MB/s as the client sees it, gateway CPU seconds per GB until the gateway is idle again,
    and the machine's CPU seconds per GB while the transfer ran (everything on it, the clients,
    sshd and other work included: when that reaches the cores' count, nothing runs faster)."""
    cpu0, busy0, start = tree_cpu_seconds(pid), machine_busy_seconds(), time.perf_counter()
    run()
    wall, busy = time.perf_counter() - start, machine_busy_seconds() - busy0
    settle(pid)
    per_gb = 1024 / megabytes
    return megabytes / wall, (tree_cpu_seconds(pid) - cpu0) * per_gb, busy * per_gb


def measure(
    gw: GatewayProcess, client: Client, size_mb: int, payload: Path
) -> list[tuple[float, float, float]]:
    assert gw.process is not None
    pid = gw.process.pid
    argv = client.ssh_argv("alice+web-1", f"yes | head -c {size_mb}M")
    return [
        timed(pid, lambda: subprocess.run(argv, stdout=subprocess.DEVNULL, check=True), size_mb),
        timed(pid, lambda: client.scp("alice+web-1", str(payload), f"gw:{SCP_TARGET}"), size_mb),
    ]


def span(values: list[float], unit: str) -> str:
    return f"{min(values):.2f}-{max(values):.2f}{unit}" if len(values) > 1 else f"{values[0]:.2f}{unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with bench_env() as env:
        payload = env.root / "payload.bin"
        payload.write_bytes(os.urandom(args.size_mb << 20))
        kinds = {"on": GatewayProcess, "off": UnrecordedGateway}
        gateways = {name: cls(env.root / name, env.config()).start() for name, cls in kinds.items()}
        clients = {name: Client(gw, env.keys.alice, env.root / f"c-{name}") for name, gw in gateways.items()}
        results: dict[str, list[list[tuple[float, float, float]]]] = {"on": [], "off": []}
        try:
            print(
                f"{'':11}{'exec MB/s':>10}{'gw s/GB':>9}{'all s/GB':>9}{'scp MB/s':>10}{'gw s/GB':>9}{'all s/GB':>9}"
            )
            for n in range(args.rounds):
                for name in ("on", "off") if n % 2 == 0 else ("off", "on"):
                    row = measure(gateways[name], clients[name], args.size_mb, payload)
                    results[name].append(row)
                    cells = "".join(f"{rate:>10.0f}{gw:>9.2f}{busy:>9.2f}" for rate, gw, busy in row)
                    print(f"{n:<6}{name:<5}{cells}")
        finally:
            for gw in gateways.values():
                gw.stop()
            SCP_TARGET.unlink(missing_ok=True)
        on, off = results["on"], results["off"]
        exec_ratio = [a[0][0] / b[0][0] for a, b in zip(on, off, strict=True)]
        scp_ratio = [a[1][0] / b[1][0] for a, b in zip(on, off, strict=True)]
        print(f"recording on / off per round: exec {span(exec_ratio, 'x')} (target >= 0.85x), "
              f"scp {span(scp_ratio, 'x')} (target >= 0.97x)")  # fmt: skip
        print(f"gateway CPU, exec yes: on {span([r[0][1] for r in on], ' s/GB')}, "
              f"off {span([r[0][1] for r in off], ' s/GB')}")  # fmt: skip
        print(f"machine CPU, exec yes: on {span([r[0][2] for r in on], ' s/GB')}, "
              f"off {span([r[0][2] for r in off], ' s/GB')}")  # fmt: skip
        own = [a[0][1] - b[0][1] for a, b in zip(on, off, strict=True)]
        print(f"recording's own CPU, exec yes: {span(own, ' s/GB')} (target <= 0.8)")
        kept = [
            f for f in (env.root / "on/data/recordings").rglob("*-exec.*") if not f.name.endswith(".jsonl")
        ]
        size = sum(f.stat().st_size for f in kept)
        print(f"recording size: {size / (args.rounds * args.size_mb << 20):.3f} MB per MB of terminal output")


if __name__ == "__main__":
    main()
