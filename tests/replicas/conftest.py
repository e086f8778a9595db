"""Gateways as replicas sharing a real redis-server, and a workers: 2 gateway without state:,
driven with real OpenSSH clients against the real test sshd."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.support.gateway import Client, GatewayProcess
from tests.support.redis import RedisServer

HMAC_KEY = "replica-test-hmac-key-of-32-characters-or-more"
LIMITS = {"auth_failures_before_lockout": 4, "lockout_s": 4, "max_sessions_per_user": 2}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def replica_config(
    keys: Keys, upstream: Upstream, state: dict[str, Any] | None, **extra: Any
) -> dict[str, Any]:
    config = base_config(keys, upstream)
    config["limits"] = dict(LIMITS)
    config["metrics"] = {"listen": "127.0.0.1:0"}
    if state is not None:
        config["state"] = {"url": "ENV:SSHGATE_STATE_URL", "hmac_key": "ENV:SSHGATE_STATE_HMAC",
                           "timeout_ms": 250, "session_ttl_s": 3, **state}  # fmt: skip
    config.update(extra)
    return config


Factory = Callable[..., GatewayProcess]


@pytest.fixture(scope="module")
def start_gateway(
    keys: Keys, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Factory]:
    started: list[GatewayProcess] = []

    def start(url: str | None, state: dict[str, Any] | None = None, **extra: Any) -> GatewayProcess:
        config = replica_config(keys, upstream, state if state is not None or url is None else {}, **extra)
        if url is None:
            config.pop("state", None)
        env = {"SGRO_PASSWORD": upstream.sshd.password, "SSHGATE_STATE_HMAC": HMAC_KEY}
        if url is not None:
            env["SSHGATE_STATE_URL"] = url
        gw = GatewayProcess(tmp_path_factory.mktemp("replica"), config, env=env).start(timeout=60)
        if config.get("workers", 1) > 1:
            deadline = time.monotonic() + 60
            while len(gw.events("gateway.listening")) < config["workers"] and time.monotonic() < deadline:
                time.sleep(0.05)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


def client(gw: GatewayProcess, key: Path, root: Path, source: str) -> Client:
    """A real ssh client whose connections come from ``source`` (a loopback address of its own,
    so each test's lockouts are its own)."""
    c = Client(gw, key, root)
    c.config.write_text(c.config.read_text() + f"  BindAddress {source}\n")
    return c


def metric(gw: GatewayProcess, name: str) -> float | None:
    port = gw.wait_event("metrics.listening")["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def hold_session(c: Client, login: str = "alice+web-1") -> subprocess.Popen[bytes]:
    """An open session that stays open until the test ends it."""
    return subprocess.Popen(
        c.ssh_argv(login, "echo open; sleep 60"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_open(process: subprocess.Popen[bytes]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line == b"open\n", process.stderr.read() if process.stderr else line


def end(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)
