"""Relay benchmark (issue 2): sshgate vs direct OpenSSH vs OpenSSH ProxyJump, one run, loopback.

Prints throughput ratios (the product, which records every session, and the relay alone with a
recorder that keeps nothing: `sshgate-norec`), gateway CPU per GB (recording's own CPU is the
difference), connection setup, keystroke echo latency and RSS per idle session. Run: .venv/bin/python -m bench.bench_relay [--size-mb 1024] [--rounds 3] [--sessions 1000]
Needs root (it creates the upstream test accounts, like the test suite).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time
import tty
from collections.abc import Callable
from pathlib import Path

import asyncssh
from tests.support.gateway import Client, GatewayProcess
from tests.support.sshd import Sshd, start_sshd
from tests.support.terminal import Terminal

from bench.common import (
    CIPHER,
    KEY_GAP_MS,
    UnrecordedGateway,
    bench_env,
    connect,
    drain,
    key_echo_us,
    machine_busy_seconds,
    percentiles,
    thread_sched_seconds,
    tree_cpu_seconds,
)

KEX = "curve25519-sha256"  # the same key exchange on every path, so setup times compare


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Direct:
    """OpenSSH straight to the sshd, or through a second sshd with ProxyJump."""

    def __init__(self, root: Path, sshd: Sshd, jump: Sshd) -> None:
        known = root / "known_hosts"
        known.write_text(sshd.known_hosts_line() + jump.known_hosts_line())
        self.config = root / "ssh_config"
        common = f"""  HostName 127.0.0.1
  User sgtest
  IdentityFile {sshd.native_key}
  IdentityFile {jump.native_key}
  IdentitiesOnly yes
  BatchMode yes
  UserKnownHostsFile {known}
  StrictHostKeyChecking yes
  Ciphers {CIPHER}
  KexAlgorithms {KEX}
  LogLevel ERROR
"""
        self.config.write_text(
            f"Host direct\n  Port {sshd.port}\n{common}\nHost jumphost\n  Port {jump.port}\n{common}\n"
            f"Host viajump\n  Port {sshd.port}\n  ProxyJump jumphost\n{common}"
        )

    def argv(self, host: str, *args: str) -> list[str]:
        return ["ssh", "-F", str(self.config), host, *args]


def timed(argv: list[str], stdin: int | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def busy_timed(argv: list[str]) -> tuple[float, float]:
    """Seconds of a download and the machine's CPU seconds meanwhile (every process)."""
    busy0 = machine_busy_seconds()
    wall = timed(argv)
    return wall, machine_busy_seconds() - busy0


def bulk(argv_for: dict[str, list[str]], size_mb: int, gateways: dict[str, int], rounds: int) -> None:
    """Down and up through each path, the paths' order alternating per round so load from other
    work hits all alike; CPU is the gateway's own (recording included), per GB moved, and the
    whole machine's on the way down: when its busy cores reach the core count, a path is bound
    by the machine's CPU, and recording on/off cannot exceed all(off) / all(on)."""
    print(f"\n## Bulk, {size_mb} MB through exec, {CIPHER} on every leg, {rounds} rounds")
    print(
        f"{'round':<6}{'path':<14}{'down MB/s':>10}{'up MB/s':>9}{'gw CPU s/GB down':>18}{'up':>7}"
        f"{'all CPU s/GB down':>19}{'busy cores':>11}"
    )
    results: dict[str, list[tuple[float, float, float, float, float]]] = {name: [] for name in argv_for}
    threads: dict[str, list[list[float]]] = {name: [] for name in gateways}
    for n in range(rounds):
        for name in list(argv_for) if n % 2 == 0 else list(reversed(argv_for)):
            base, pid = argv_for[name], gateways.get(name)
            cpu0 = tree_cpu_seconds(pid) if pid else 0.0
            sched0 = thread_sched_seconds(pid) if pid else (0.0,) * 4
            down, busy = busy_timed([*base, f"head -c {size_mb}M /dev/zero"])
            cpu1 = tree_cpu_seconds(pid) if pid else 0.0
            if pid:
                sched = thread_sched_seconds(pid)
                threads[name].append([(b - a) * 1024 / size_mb for a, b in zip(sched0, sched, strict=True)])
            feeder = subprocess.Popen(["head", "-c", f"{size_mb}M", "/dev/zero"], stdout=subprocess.PIPE)
            up = timed([*base, "cat > /dev/null"], stdin=feeder.stdout.fileno() if feeder.stdout else None)
            feeder.wait()
            cpu2 = tree_cpu_seconds(pid) if pid else 0.0
            per_gb = 1024 / size_mb
            row = (
                size_mb / down,
                size_mb / up,
                (cpu1 - cpu0) * per_gb,
                (cpu2 - cpu1) * per_gb,
                busy * per_gb,
            )
            results[name].append(row)
            print(
                f"{n:<6}{name:<14}{row[0]:>10.0f}{row[1]:>9.0f}{row[2]:>18.2f}{row[3]:>7.2f}"
                f"{row[4]:>19.2f}{busy / down:>11.2f}"
            )
    med = {name: [statistics.median(r[i] for r in rows) for i in range(5)] for name, rows in results.items()}
    jump, direct = med["proxyjump"], med["direct"]
    print("medians over the rounds:")
    for name in gateways:
        gw = med[name]
        print(f"{name} / ProxyJump: down {gw[0] / jump[0]:.2f}x, up {gw[1] / jump[1]:.2f}x (target >= 1.0x)")
        print(f"{name} / direct:    down {gw[0] / direct[0]:.2f}x, up {gw[1] / direct[1]:.2f}x")
    if "sshgate-norec" in med:
        on, off = med["sshgate"], med["sshgate-norec"]
        print(f"recording on / off: down {on[0] / off[0]:.2f}x (target >= 0.9x), up {on[1] / off[1]:.2f}x")
        print(
            f"recording's own CPU: down {on[2] - off[2]:.2f} s/GB, up {on[3] - off[3]:.2f} s/GB (target <= 0.8)"
        )
        print(
            f"machine CPU per GB down, off / on: {off[4]:.2f} / {on[4]:.2f} (on/off bound {off[4] / on[4]:.2f}x)"
        )
    for name, spent in threads.items():
        main_on, main_wait, rest_on, rest_wait = (statistics.median(r[i] for r in spent) for i in range(4))
        print(
            f"{name} threads, s/GB down: main on CPU {main_on:.2f}, waiting for a core {main_wait:.2f}; "
            f"others on CPU {rest_on:.2f}, waiting {rest_wait:.2f}"
        )
    for name, rows in results.items():
        print(
            f"{name:<14} rounds: down {' '.join(f'{r[0]:.0f}' for r in rows)}  up {' '.join(f'{r[1]:.0f}' for r in rows)}"
        )


def setup_latency(argv_for: dict[str, list[str]], runs: int = 20) -> None:
    print(f"\n## Connection setup, `ssh ... true`, {runs} runs")
    medians = {}
    for name in ("direct", "sshgate"):
        times = sorted(timed([*argv_for[name], "true"]) * 1000 for _ in range(runs))
        medians[name] = statistics.median(times)
        p95 = times[int(0.95 * (runs - 1))]
        print(f"{name:<12} median {medians[name]:6.1f} ms   p95 {p95:6.1f} ms")
    print(f"sshgate - direct: {medians['sshgate'] - medians['direct']:+.1f} ms median (target <= +15 ms)")


def echo_latency(
    argvs: dict[str, list[str]], count: int, ready: Callable[[], None] = lambda: None, gap_ms: float = 0.0
) -> dict[str, list[float]]:
    """Round trips of single bytes through each PTY, alternating paths so load hits all alike,
    ``gap_ms`` apart; ``ready`` runs once every session is up (bench_web attaches a live viewer
    there)."""
    terms = {
        name: Terminal([*argv[:1], "-tt", *argv[1:], "stty raw -echo; echo READY; exec cat"])
        for name, argv in argvs.items()
    }
    try:
        for term in terms.values():
            tty.setraw(term.master)
            term.read_until(r"READY")
            drain(term)
        ready()
        samples: dict[str, list[float]] = {name: [] for name in terms}
        for _ in range(count):
            for name, term in terms.items():
                samples[name].append(key_echo_us(term, gap_ms))
        return samples
    finally:
        for term in terms.values():
            term.close()


def keystrokes(argv_for: dict[str, list[str]], count: int = 1000) -> None:
    """Back to back, as the targets were set, and ``KEY_GAP_MS`` apart, as people type."""
    for gap_ms in (0.0, KEY_GAP_MS):
        print(
            f"\n## Keystroke echo through a PTY, {count} single bytes {gap_ms:g} ms apart, paths interleaved"
        )
        measured = echo_latency(
            {name: argv_for[name] for name in ("direct", "sshgate")}, count, gap_ms=gap_ms
        )
        p50, p99 = {}, {}
        for name, samples in measured.items():
            p50[name], p99[name] = percentiles(samples)
            print(f"{name:<12} p50 {p50[name]:7.0f} us   p99 {p99[name]:7.0f} us")
        print(
            f"sshgate - direct: p50 {p50['sshgate'] - p50['direct']:+.0f} us (target <= +400), "
            f"p99 {p99['sshgate'] - p99['direct']:+.0f} us (target <= +1000)"
        )


async def idle_sessions(gw: GatewayProcess, key: Path, sessions: int) -> None:
    print(f"\n## RSS per idle PTY session, {sessions} concurrent sessions")
    client_key = asyncssh.read_private_key(str(key))
    pid = gw.process.pid if gw.process else 0
    conns: list[asyncssh.SSHClientConnection] = []
    failures = 0

    async def one() -> None:
        nonlocal failures
        try:
            conn = await connect(gw.port, client_key)
            await conn.create_session(asyncssh.SSHClientSession, term_type="xterm", encoding=None)
            conns.append(conn)
        except (OSError, asyncssh.Error):
            failures += 1

    await one()
    await asyncio.sleep(1)
    base = rss_kb(pid)
    start = time.perf_counter()
    for i in range(0, sessions - 1, 50):
        await asyncio.gather(*(one() for _ in range(min(50, sessions - 1 - i))))
    await asyncio.sleep(2)
    grown = rss_kb(pid)
    print(f"opened {len(conns)} sessions in {time.perf_counter() - start:.1f} s, {failures} failed")
    per_session = (grown - base) / max(1, len(conns) - 1)
    print(
        f"gateway RSS {base / 1024:.0f} MB -> {grown / 1024:.0f} MB: {per_session:.0f} KB per session (target <= 64)"
    )
    for conn in conns:
        conn.close()
    await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--keystrokes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="bulk rounds, paths interleaved")
    parser.add_argument("--bulk-only", action="store_true", help="skip setup, keystrokes and idle sessions")
    args = parser.parse_args()
    with bench_env() as env:
        jump = start_sshd(env.root / "jump")
        gw = GatewayProcess(env.root / "gw", env.config()).start()
        relay = UnrecordedGateway(env.root / "relay", env.config()).start()
        try:
            assert gw.process is not None and relay.process is not None
            client = Client(gw, env.keys.alice, env.root / "client")
            direct = Direct(env.root, env.sshd, jump)
            kex = ["-o", f"KexAlgorithms={KEX}"]
            argv_for = {
                "direct": direct.argv("direct"),
                "proxyjump": direct.argv("viajump"),
                "sshgate": client.ssh_argv("alice+web-1", options=kex),
            }
            relay_only = Client(relay, env.keys.alice, env.root / "relay-client")
            bulk(
                {**argv_for, "sshgate-norec": relay_only.ssh_argv("alice+web-1", options=kex)},
                args.size_mb,
                {"sshgate": gw.process.pid, "sshgate-norec": relay.process.pid},
                args.rounds,
            )
            if args.bulk_only:
                return
            setup_latency(argv_for)
            keystrokes(argv_for, args.keystrokes)
            asyncio.run(idle_sessions(gw, env.keys.alice, args.sessions))
        finally:
            gw.stop()
            relay.stop()
            jump.stop()


if __name__ == "__main__":
    main()
