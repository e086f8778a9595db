"""Metrics and probes over real HTTP on 127.0.0.1, in one process and summed over worker processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from sshgate.metrics import (
    Metrics,
    MetricsServer,
    multiprocess_registry,
    parse_listen,
    prepare_multiprocess_dir,
    ready_marker,
    worker_exited,
)

DESIGN_NAMES = {
    "sshgate_sessions_active",
    "sshgate_sessions",  # the parser drops a counter's _total suffix from the family name
    "sshgate_auth_attempts",
    "sshgate_policy_decisions",
    "sshgate_policy_eval_seconds",
    "sshgate_upstream_connect_seconds",
    "sshgate_bytes",
    "sshgate_state_available",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> Samples:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def status(port: int, path: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def serving(registry: CollectorRegistry, ready: Callable[[], bool]) -> AsyncIterator[MetricsServer]:
    server = MetricsServer(registry, ready)
    await server.start("127.0.0.1:0")
    try:
        yield server
    finally:
        await server.stop()


class Flag:
    def __init__(self) -> None:
        self.on = False

    def __call__(self) -> bool:
        return self.on


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def ready() -> Flag:
    return Flag()


@pytest.fixture
async def server(metrics: Metrics, ready: Flag) -> AsyncIterator[MetricsServer]:
    async for server in serving(metrics.registry, ready):
        yield server


async def test_exactly_the_design_names_plus_process_metrics(metrics: Metrics, server: MetricsServer) -> None:
    metrics.session_refused("web-1", "ssh", "blocked")
    metrics.policy_decision("session", "block", 0.001)
    metrics.upstream_connected("ssh", 0.01)
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{server.port}/metrics") as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        families = {f.name for f in text_string_to_metric_families(await resp.text())}
    assert {n for n in families if n.startswith("sshgate_")} == DESIGN_NAMES
    assert "process_resident_memory_bytes" in families
    assert "python_info" in families


async def test_values_move_with_gateway_events(metrics: Metrics, server: MetricsServer) -> None:
    before = await scrape(server.port)
    assert value(before, "sshgate_sessions_active") == 0
    metrics.auth_attempt("publickey", "success")
    metrics.auth_attempt("password", "failure")
    metrics.auth_attempt("password", "failure")
    metrics.session_started()
    metrics.session_started()
    metrics.session_ended("web-1", "ssh", "closed")
    metrics.session_refused("app-prod", "ec2", "blocked")
    metrics.policy_decision("session", "allow", 0.0003)
    metrics.policy_decision("request", "block", 0.002)
    metrics.upstream_connected("ssh", 0.04)
    metrics.transferred("to_upstream", 100)
    metrics.transferred("to_client", 4096)
    metrics.transferred("to_client", 4)

    after = await scrape(server.port)
    assert value(after, "sshgate_sessions_active") == 1
    assert value(after, "sshgate_auth_attempts_total", method="password", result="failure") == 2
    assert value(after, "sshgate_auth_attempts_total", method="publickey", result="success") == 1
    assert value(after, "sshgate_sessions_total", resource="web-1", type="ssh", outcome="closed") == 1
    assert value(after, "sshgate_sessions_total", resource="app-prod", type="ec2", outcome="blocked") == 1
    assert value(after, "sshgate_policy_decisions_total", stage="request", action="block") == 1
    assert value(after, "sshgate_policy_eval_seconds_count") == 2
    assert value(after, "sshgate_policy_eval_seconds_bucket", le="0.0005") == 1
    assert value(after, "sshgate_upstream_connect_seconds_count", type="ssh") == 1
    assert value(after, "sshgate_upstream_connect_seconds_sum", type="ssh") == pytest.approx(0.04)
    assert value(after, "sshgate_bytes_total", direction="to_client") == 4100
    assert value(after, "sshgate_bytes_total", direction="to_upstream") == 100


async def test_healthz_always_readyz_follows_the_callback(server: MetricsServer, ready: Flag) -> None:
    assert await status(server.port, "/healthz") == 200
    assert await status(server.port, "/readyz") == 503
    ready.on = True
    assert await status(server.port, "/readyz") == 200
    ready.on = False  # draining
    assert await status(server.port, "/readyz") == 503
    assert await status(server.port, "/healthz") == 200


async def test_two_instances_do_not_share_values() -> None:
    one, two = Metrics(), Metrics()
    one.auth_attempt("publickey", "success")
    assert (
        one.registry.get_sample_value(
            "sshgate_auth_attempts_total", {"method": "publickey", "result": "success"}
        )
        == 1
    )
    assert (
        two.registry.get_sample_value(
            "sshgate_auth_attempts_total", {"method": "publickey", "result": "success"}
        )
        is None
    )


WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import prometheus_client  # imported first, as in a forked worker
    from sshgate.metrics import Metrics, use_multiprocess_dir
    use_multiprocess_dir(Path(sys.argv[1]))
    m = Metrics()
    m.session_started()
    m.session_started()
    m.auth_attempt("publickey", "success")
    m.transferred("to_client", 1000)
    print("ok", flush=True)
    sys.stdin.read()
    """
)


async def test_workers_sum_into_one_endpoint(tmp_path: Path) -> None:
    directory = prepare_multiprocess_dir(tmp_path / "prom")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for w in workers:
            assert w.stdout is not None and w.stdout.readline() == "ok\n"
        live = {w.pid for w in workers}
        async for server in serving(multiprocess_registry(directory, lambda: sorted(live)), lambda: True):
            both = await scrape(server.port)
            assert value(both, "sshgate_sessions_active") == 4
            assert value(both, "sshgate_auth_attempts_total", method="publickey", result="success") == 2
            assert value(both, "sshgate_bytes_total", direction="to_client") == 2000
            for pid in live:
                assert value(both, "process_resident_memory_bytes", pid=str(pid)) > 0

            gone = workers[0]
            assert gone.stdin is not None
            gone.stdin.close()
            assert gone.wait(timeout=10) == 0
            live.discard(gone.pid)
            worker_exited(gone.pid, directory)
            one = await scrape(server.port)
            assert value(one, "sshgate_sessions_active") == 2
            assert value(one, "sshgate_auth_attempts_total", method="publickey", result="success") == 2
            assert value(one, "process_resident_memory_bytes", pid=str(gone.pid)) == 0
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
            w.wait()
            assert w.stdout is not None
            w.stdout.close()
            if w.stdin is not None:
                w.stdin.close()


def test_prepare_multiprocess_dir_drops_stale_files(tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"x")
    ready_marker(tmp_path, 123).touch()  # a SIGKILLed worker's: its PID may come back
    (tmp_path / "keep.txt").write_text("x")
    prepare_multiprocess_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_an_exited_worker_is_no_longer_ready(tmp_path: Path) -> None:
    ready_marker(tmp_path, 123).touch()
    ready_marker(tmp_path, 124).touch()
    worker_exited(123, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [ready_marker(tmp_path, 124).name]


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9090", ("127.0.0.1", 9090)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:9100", ("::1", 9100)),
        (":9090", ("0.0.0.0", 9090)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9090", "host:", "host:http"])
def test_parse_listen_refuses(listen: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen(listen)
