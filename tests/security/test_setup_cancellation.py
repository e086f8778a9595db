"""Clients that leave while their session is being set up (docs/recordings.md, ``aborted``): 40 logins cut
off during the policy decision, during the upstream connect, and at random moments of a slow
setup leave no descriptor open, no recording ``active``, and no per-user session counted."""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import Keys, Upstream, base_config, ssh_resource
from tests.support.gateway import Client, GatewayProcess
from tests.support.leaks import open_fds, recording_docs, settle
from tests.support.slow_peers import delayed_proxy, slow_opa, stalling_upstream

POLICY_DELAY_S = 2.0
UPSTREAM_DELAY_S = 0.8
SESSION_CAP = 12


@dataclass
class Setup:
    gw: GatewayProcess
    alice: Client
    baseline: int


@pytest.fixture(scope="module")
def setup(keys: Keys, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("cancel")
    key = [{"username": "sgtest", "secret": f"FILE:{upstream.sshd.native_key}", "default": True}]
    with (
        stalling_upstream() as stall_port,
        delayed_proxy(upstream.sshd.port, UPSTREAM_DELAY_S) as slow_port,
        slow_opa({"slow-policy": POLICY_DELAY_S}) as opa_url,
    ):
        config = base_config(keys, upstream)
        config["limits"] = {**config["limits"], "max_sessions_per_user": SESSION_CAP}
        config["policies"] = {"engine": "opa", "opa_url": opa_url, "timeout_ms": 10_000}
        config["resources"] += [
            ssh_resource("stall", upstream, key, port=stall_port, connect_timeout_s=60),
            ssh_resource(
                "slow-upstream",
                upstream,
                key,
                port=slow_port,
                host_key_policy={"host_keys": [upstream.sshd.host_pub]},
            ),
            ssh_resource("slow-policy", upstream, key),
        ]
        gw = GatewayProcess(root / "gw", config).start()
        try:
            alice = Client(gw, keys.alice, root / "alice")
            # Warm up what a gateway keeps for its lifetime (recording writer, policy client).
            for resource in ("web-1", "slow-upstream"):
                warm = alice.ssh(f"alice+{resource}", "true")
                assert warm.returncode == 0, warm.stderr
            settle(gw)
            yield Setup(gw, alice, len(open_fds(gw)))
        finally:
            gw.stop()


def _launch(alice: Client, resource: str, n: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            alice.ssh_argv(f"alice+{resource}", "echo done"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(n)
    ]


def _wait_count(gw: GatewayProcess, event: str, count: int, timeout: float = 30, **match: str) -> None:
    deadline = time.monotonic() + timeout
    while len(gw.events(event, **match)) < count:
        assert time.monotonic() < deadline, f"{count} {event} {match} expected:\n" + "".join(gw.raw[-10:])
        time.sleep(0.02)


def _kill(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait(timeout=10)


def _assert_clean(s: Setup) -> list[dict[str, object]]:
    fds, states = settle(s.gw, s.baseline)
    assert not states["active"], states
    assert len(fds) <= s.baseline, sorted(fds)
    docs = recording_docs(s.gw)
    ended = {e["session_id"] for e in s.gw.events("session.end")}
    assert {d["id"] for d in docs} <= ended  # every recorded session has its audit end
    # The per-user cap counts no session of the aborted logins.
    ok = s.alice.ssh("alice+web-1", "echo fine")
    assert ok.stdout == b"fine\n", ok.stderr
    return docs


def test_left_during_policy_decision(setup: Setup) -> None:
    gw, before = setup.gw, len(setup.gw.events("auth.success"))
    procs = _launch(setup.alice, "slow-policy", 10)
    _wait_count(gw, "auth.success", before + 10)
    _kill(procs)
    assert not gw.events("policy.decision", resource="slow-policy")
    _assert_clean(setup)


def test_left_during_upstream_connect(setup: Setup) -> None:
    """The upstream accepts TCP and never sends its banner: every recording ends ``aborted``."""
    gw = setup.gw
    procs = _launch(setup.alice, "stall", 10)
    _wait_count(gw, "session.start", 10, resource="stall")
    _kill(procs)
    docs = [d for d in _assert_clean(setup) if d["resource"] == "stall"]
    assert len(docs) == 10
    assert {(d["status"], d.get("end_reason")) for d in docs} == {("aborted", "client")}


def test_left_at_random_moments(setup: Setup) -> None:
    """20 logins to an upstream that answers after a delay, each cut off at its own moment: in
    authentication, the policy decision, the upstream connect, or the running session."""
    gw, rng = setup.gw, random.Random(11)
    procs = _launch(setup.alice, "slow-upstream", 20)
    started = time.monotonic()
    for proc, at in sorted(zip(procs, (rng.uniform(0, 2.0) for _ in procs), strict=True), key=lambda x: x[1]):
        time.sleep(max(0.0, started + at - time.monotonic()))
        proc.kill()
    _kill(procs)
    docs = [d for d in _assert_clean(setup) if d["resource"] == "slow-upstream"]
    # A client may leave while its recording is being created, before session.start is logged.
    started = {e["session_id"] for e in gw.events("session.start", resource="slow-upstream")}
    assert started <= {d["id"] for d in docs}
    assert {d["status"] for d in docs} <= {"aborted", "closed"}
    assert all(d.get("end_reason") == "client" for d in docs if d["status"] == "aborted")
