"""A policy rule that is slow for one user (issue 11 item 8), against the real gateway, sshd and ssh.

Before: the embedded engine ignored ``timeout_ms`` and ran on the event loop, so a 2.7 s rule was
obeyed and every other login waited for it. Now the slow user is denied at the deadline, and
logins decided while the rule runs are not held up at all.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.support.engines import engine_processes
from tests.support.gateway import Client, GatewayProcess

# The same work takes at least 2 s here (tests/policy/test_deadline.py measures it).
SLOW_FOR_JOHN = """package formal.v2

import rego.v1

session := {"action": "allow"} if {
\tinput.user.email == "john@corp.com"
\tcount([x | some i in numbers.range(1, 6000); some j in numbers.range(1, 1000); x := i * j]) > 0
}

session := {"action": "allow"} if input.user.email != "john@corp.com"
"""
TIMEOUT_REASON = "policy timeout: data.formal.v2.session did not finish within 300 ms"


def _start_gateway(root: Path, keys: Keys, upstream: Upstream) -> GatewayProcess:
    """A gateway whose only policy file, ``root/policies/slow.rego``, is slow for john."""
    (root / "policies").mkdir(parents=True)
    (root / "policies" / "slow.rego").write_text(SLOW_FOR_JOHN)
    config = base_config(keys, upstream)
    config["policies"] = {"paths": [str(root / "policies")], "timeout_ms": 300}
    return GatewayProcess(root / "gw", config, env={"SGRO_PASSWORD": upstream.sshd.password}).start()


@pytest.fixture(scope="module")
def slow_gateway(
    keys: Keys, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    gw = _start_gateway(tmp_path_factory.mktemp("slow-policy"), keys, upstream)
    yield gw
    gw.stop()


def _at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))


def _sessions_of(gw: GatewayProcess, email: str) -> set[str]:
    return {str(e["session_id"]) for e in gw.events("auth.success", identity=email)}


Login = tuple[float, subprocess.CompletedProcess[bytes]]


def _timed_login(client: Client, login: str, command: str = "echo ok") -> Login:
    start = time.monotonic()
    result = client.ssh(login, command, timeout=30)
    return time.monotonic() - start, result


def _logins_until(stop: threading.Event, client: Client, login: str) -> list[Login]:
    done: list[Login] = []
    while not stop.is_set() and len(done) < 40:
        done.append(_timed_login(client, login))
    return done


def test_slow_rule_denies_its_user_at_the_deadline_and_stalls_nobody(
    slow_gateway: GatewayProcess, keys: Keys, tmp_path: Path
) -> None:
    gw = slow_gateway
    john = Client(gw, keys.john, tmp_path / "john")
    alice = Client(gw, keys.alice, tmp_path / "alice")
    baseline = min(_timed_login(alice, "alice+web-1")[0] for _ in range(3))

    # Two loops of alice's logins run the whole time john logs in three times.
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=2) as pool:
        loops = [pool.submit(_logins_until, stop, alice, "alice+web-1") for _ in range(2)]
        time.sleep(0.3)
        johns = [_timed_login(john, "john+web-1", "echo never") for _ in range(3)]
        stop.set()
        alices = [login for loop in loops for login in loop.result()]

    # John: denied at the deadline, told in one line; the audit log says why.
    for took, result in johns:
        assert (result.returncode, result.stdout) == (1, b"")
        assert result.stderr == b"sshgate: Blocked by policy: policy unavailable\n"
        assert took < baseline + 1.5
    john_sessions = _sessions_of(gw, "john@corp.com")
    slow = [e for e in gw.events("policy.decision") if e["session_id"] in john_sessions]
    assert len(slow) == 3
    for decision in slow:
        assert (decision["action"], decision["reason"]) == ("block", TIMEOUT_REASON)
        assert 290 <= decision["eval_ms"] < 1000  # the deadline timer starts a hair before eval_ms does

    # Alice: every login went through without waiting for john's rule, including the ones
    # decided while it ran (it takes seconds; the old engine made everyone wait for it).
    for took, result in alices:
        assert result.stdout == b"ok\n", result.stderr
        assert took < baseline + 1.5, (baseline, took)
    alice_sessions = _sessions_of(gw, "alice@corp.com")
    windows = [(_at(e) - timedelta(milliseconds=e["eval_ms"]), _at(e)) for e in slow]
    during = [
        e
        for e in gw.events("policy.decision")
        if e["session_id"] in alice_sessions and any(a <= _at(e) <= b for a, b in windows)
    ]
    assert during, "no login of alice's was decided while john's rule ran"
    assert all(e["action"] == "allow" and e["eval_ms"] < 150 for e in during), during


def _settled(gateway: int, old: set[int]) -> set[int]:
    """The pids of the gateway's one template and its two workers, once none of ``old`` is left."""
    deadline = time.monotonic() + 10
    while True:
        found = engine_processes(gateway)
        pids = set(found) | set().union(*found.values())
        if [len(workers) for workers in found.values()] == [2] and not pids & old:
            return pids
        assert time.monotonic() < deadline, (found, old)
        time.sleep(0.05)


def test_reload_replaces_every_engine_process(keys: Keys, upstream: Upstream, tmp_path: Path) -> None:
    """SIGHUP builds the whole new engine before swapping it in; the old processes all end."""
    gw = _start_gateway(tmp_path, keys, upstream)
    policy = tmp_path / "policies" / "slow.rego"
    try:
        assert gw.process is not None
        john = Client(gw, keys.john, tmp_path / "john")
        assert john.ssh("john+web-1", "echo ok").stderr == b"sshgate: Blocked by policy: policy unavailable\n"
        old = _settled(gw.process.pid, set())  # john's killed worker is replaced

        policy.write_text('package formal.v2\n\nsession := {"action": "allow"}\n')
        gw.signal(signal.SIGHUP)
        gw.wait_event("config.reload", result="ok")
        assert john.ssh("john+web-1", "echo ok").stdout == b"ok\n"
        _settled(gw.process.pid, old)  # the file watcher may swap once more
    finally:
        gw.stop()
    assert not engine_processes(gw.process.pid)


def test_opa_that_does_not_answer_denies_at_the_deadline(
    keys: Keys, upstream: Upstream, tmp_path: Path
) -> None:
    """``engine: opa`` keeps the same promise: a server that accepts and stays silent denies at 300 ms."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes connections; nothing ever reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        config = base_config(keys, upstream)
        config["policies"] = {"engine": "opa", "opa_url": url, "timeout_ms": 300}
        gw = GatewayProcess(tmp_path / "gw", config).start()
        try:
            _, result = _timed_login(Client(gw, keys.alice, tmp_path / "alice"), "alice+web-1")
            assert (result.returncode, result.stdout) == (1, b"")
            assert result.stderr == b"sshgate: Blocked by policy: policy unavailable\n"
            decision = gw.wait_event("policy.decision", action="block")
            assert decision["reason"] == f"policy timeout: OPA at {url} did not answer within 300 ms"
            assert 290 <= decision["eval_ms"] < 1000  # the deadline timer starts a hair before eval_ms does
        finally:
            gw.stop()
