"""What every relay benchmark needs: a private sshd, identities, and the tests' base config."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
from tests.conftest import Keys, Upstream, base_config
from tests.support.gateway import GatewayProcess, user_key
from tests.support.sshd import Sshd, keygen, start_sshd
from tests.support.terminal import Terminal

CIPHER = "aes128-gcm@openssh.com"
NO_RECORDING = (
    "import sshgate.gateway.server as s, sshgate.recording.recorder as r; "
    "s.build_recorder = lambda config: r.NullRecorder(); "
    "from sshgate.cli import main; main(['serve', '--config', {config!r}])"
)


class UnrecordedGateway(GatewayProcess):
    """The gateway with a recorder that keeps nothing (bench only: sshgate cannot turn recording off)."""

    def argv(self) -> list[str]:
        return [sys.executable, "-c", NO_RECORDING.format(config=str(self.config_path))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> float:
    """On-CPU time of ``pid``'s live threads to the nanosecond (schedstat): for per-event costs
    of a few µs, where ``cpu_seconds``' clock ticks (10 ms) are too coarse."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def thread_sched_seconds(pid: int) -> tuple[float, float, float, float]:
    """The main thread's on-CPU and run-queue seconds (runnable, waiting for a core), then the
    same summed over ``pid``'s other live threads (schedstat): when a path is CPU-bound on a
    small machine, the event loop's wait for a core says how much the other threads cost it."""
    main = [0, 0]
    rest = [0, 0]
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            on_cpu, waited = (int(v) for v in (task / "schedstat").read_text().split()[:2])
            into = main if task.name == str(pid) else rest
            into[0] += on_cpu
            into[1] += waited
    return main[0] / 1e9, main[1] / 1e9, rest[0] / 1e9, rest[1] / 1e9


KEY_GAP_MS = 2.0
"""Pause before each keystroke of an echo measurement, as a typist pauses (far longer). Back to
back (0) measures something else: AWS's plugin sleeps 1 ms after each read of its terminal
(shellsession_unix.go), so its keys then wait out that sleep; and on this VM a pause makes every
process's next wakeup dearer (the gateway's CPU per SSM keystroke rose from about 300 to 450 µs
with 2 ms pauses, with the same system calls per key)."""


def drain(term: Terminal) -> None:
    """Read what a terminal has printed until it is quiet for 50 ms, so that each keystroke after
    this reads its own echo, not an earlier one's."""
    while select.select([term.master], [], [], 0.05)[0]:
        os.read(term.master, 4096)


def key_echo_us(term: Terminal, gap_ms: float) -> float:
    """One keystroke's round trip through ``cat`` on a raw, drained terminal, in µs."""
    time.sleep(gap_ms / 1e3)
    start = time.perf_counter()
    os.write(term.master, b"x")
    while not os.read(term.master, 16).endswith(b"x"):
        pass
    return (time.perf_counter() - start) * 1e6


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99."""
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[int(0.99 * (len(ordered) - 1))]


def machine_busy_seconds() -> float:
    """CPU time every process on the machine has used (with 2 cores, at most 2 s per second)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and its live descendants (a supervisor's workers)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return cpu_seconds(pid) + sum(tree_cpu_seconds(child) for child in children)


def connect(port: int, key: asyncssh.SSHKey) -> Any:
    """An asyncssh client connection to a gateway on loopback, as alice+web-1 (await or `async with`)."""
    return asyncssh.connect(
        "127.0.0.1", port, username="alice+web-1", client_keys=[key], known_hosts=None,
        encryption_algs=[CIPHER], compression_algs=None, agent_path=None, config=None,
    )  # fmt: skip


@dataclass
class BenchEnv:
    root: Path
    sshd: Sshd
    keys: Keys
    upstream: Upstream

    def config(self, **overrides: Any) -> dict[str, Any]:
        """One resource (web-1), limits out of the way of load, then ``overrides``."""
        config = base_config(self.keys, self.upstream)
        config["resources"] = config["resources"][:1]
        config["limits"] = {
            "max_unauthenticated": 1000,
            "max_unauthenticated_per_source": 1000,
            "max_sessions_per_user": 100000,
            "auth_failures_before_lockout": 100000,
        }
        config.update(overrides)
        return config


@contextmanager
def bench_env() -> Iterator[BenchEnv]:
    root = Path(tempfile.mkdtemp(prefix="sshgate-bench-"))
    root.chmod(0o755)
    sshd = start_sshd(root / "sshd")
    try:
        keys_root = root / "keys"
        keys = Keys(
            keys_root,
            user_key(keys_root, "alice"),
            user_key(keys_root, "john"),
            user_key(keys_root, "bot"),
            user_key(keys_root, "stranger"),
            keygen(keys_root / "ca", "ca"),
            "unused",
            "scrypt$1$1$1$x$x",
        )
        known = root / "known_hosts"
        known.write_text(sshd.known_hosts_line())
        yield BenchEnv(root, sshd, keys, Upstream(sshd, known, known))
    finally:
        sshd.stop()
        shutil.rmtree(root, ignore_errors=True)
