"""Prometheus metrics (docs/operations.md) and the listener for ``/metrics``, ``/healthz``, ``/readyz``.

The gateway records events on a :class:`Metrics`; a :class:`MetricsServer` serves a registry.
With ``workers: 1`` that registry is the worker's own (:attr:`Metrics.registry`). With
``workers: N`` every worker process writes its values to memory-mapped files in one directory
(prometheus_client's multiprocess mode, :func:`use_multiprocess_dir`) and one endpoint, in the
supervising process, serves their sum (:func:`multiprocess_registry`): Prometheus scrapes one
port per pod and counters survive a worker restart.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Literal

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

Stage = Literal["session", "request"]
Direction = Literal["to_upstream", "to_client"]

_POLICY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_CONNECT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """The collectors of docs/operations.md in a private registry, so tests and several instances never clash.

    Label values the gateway should use: ``outcome`` closed | error | blocked | refused |
    interrupted; ``method`` publickey | certificate | password; ``result`` success | failure |
    locked_out; ``action`` allow | block.
    """

    def __init__(self) -> None:
        # docs/operations.md fixes the exported names; the ``*_created`` series are not among them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        if not _multiprocess_enabled():
            # In multiprocess mode the aggregating endpoint reports processes instead.
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            self.registry.register(GC_COLLECTOR)
        self._active = Gauge(
            "sshgate_sessions_active",
            "Sessions bound to a resource and not yet closed.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._sessions = Counter(
            "sshgate_sessions_total",
            "Sessions by resource, resource type and how they ended.",
            ["resource", "type", "outcome"],
            registry=self.registry,
        )
        self._auth = Counter(
            "sshgate_auth_attempts_total",
            "Authentication attempts by method and result.",
            ["method", "result"],
            registry=self.registry,
        )
        self._decisions = Counter(
            "sshgate_policy_decisions_total",
            "Policy decisions by stage and action.",
            ["stage", "action"],
            registry=self.registry,
        )
        self._policy_eval = Histogram(
            "sshgate_policy_eval_seconds",
            "Time to evaluate one policy decision.",
            registry=self.registry,
            buckets=_POLICY_BUCKETS,
        )
        self._connect = Histogram(
            "sshgate_upstream_connect_seconds",
            "Time to connect to an upstream, by resource type.",
            ["type"],
            registry=self.registry,
            buckets=_CONNECT_BUCKETS,
        )
        self._bytes = Counter(
            "sshgate_bytes_total",
            "Bytes relayed, by direction.",
            ["direction"],
            registry=self.registry,
        )

        self._state = Gauge(
            "sshgate_state_available",
            "1 while the shared state answers (always, without state:); 0 while replicas count alone.",
            registry=self.registry,
            multiprocess_mode="livemin",
        )

    def state_available(self, available: bool) -> None:
        self._state.set(1 if available else 0)

    def auth_attempt(self, method: str, result: str) -> None:
        self._auth.labels(method, result).inc()

    def session_started(self) -> None:
        self._active.inc()

    def session_ended(self, resource: str, type_: str, outcome: str) -> None:
        """A session counted by :meth:`session_started` is over."""
        self._active.dec()
        self._sessions.labels(resource, type_, outcome).inc()

    def session_refused(self, resource: str, type_: str, outcome: str) -> None:
        """A session that never became active (policy block, limit, upstream failure)."""
        self._sessions.labels(resource, type_, outcome).inc()

    def policy_decision(self, stage: Stage, action: str, seconds: float) -> None:
        self._decisions.labels(stage, action).inc()
        self._policy_eval.observe(seconds)

    def upstream_connected(self, type_: str, seconds: float) -> None:
        self._connect.labels(type_).observe(seconds)

    def transferred(self, direction: Direction, n: int) -> None:
        self._bytes.labels(direction).inc(n)


def _multiprocess_enabled() -> bool:
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def use_multiprocess_dir(directory: Path) -> None:
    """Make this worker write its metric values to ``directory``; call before creating :class:`Metrics`.

    prometheus_client picks its value store when first imported, from the environment; setting
    both here works whether the worker was forked after that import or spawned.
    """
    os.environ[_MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


_READY = "ready-"


def ready_marker(directory: Path, pid: int) -> Path:
    """A worker's own readiness, as a file the supervisor can see: present while it serves."""
    return directory / f"{_READY}{pid}"


def prepare_multiprocess_dir(directory: Path) -> Path:
    """Create an empty directory for the workers' files: stale values from a previous run would add
    up, and a stale marker of a killed worker whose PID comes back (as in a container) would say
    ready before that worker listens."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in [*directory.glob("*.db"), *directory.glob(f"{_READY}*")]:
        stale.unlink()
    return directory


def worker_exited(pid: int, directory: Path) -> None:
    """Drop a dead worker's live gauges (active sessions) and its readiness marker, which only a
    graceful stop removes; its counters keep counting in the sum."""
    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
    ready_marker(directory, pid).unlink(missing_ok=True)


class _WorkerProcesses(Collector):
    """``process_*`` metrics of every live worker, labelled by ``pid``."""

    def __init__(self, pids: Callable[[], Iterable[int]]) -> None:
        self._pids = pids

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for pid in self._pids():
            for family in ProcessCollector(pid=partial(int, pid), registry=None).collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        yield from families.values()


def multiprocess_registry(directory: Path, worker_pids: Callable[[], Iterable[int]]) -> CollectorRegistry:
    """What the supervisor serves with ``workers: N``: the sum over all workers' files."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, str(directory))  # type: ignore[no-untyped-call]
    registry.register(_WorkerProcesses(worker_pids))
    return registry


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` as in ``metrics.listen``."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"metrics.listen must be HOST:PORT, not {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class MetricsServer:
    """aiohttp listener on the event loop: probes must answer even when sessions keep the loop busy."""

    def __init__(self, registry: CollectorRegistry, ready: Callable[[], bool]) -> None:
        self._registry = registry
        self._ready = ready
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        self.port = 0

    async def start(self, listen: str) -> None:
        """Bind ``listen`` (port 0 picks a free port, then read :attr:`port`)."""
        host, port = parse_listen(listen)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")
