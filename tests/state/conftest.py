"""Replicas as the gateway builds them, against a real redis-server the test starts and stops."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sshgate.state.redis_store import RedisStore, connect
from sshgate.state.replicated import ReplicatedState
from sshgate.state.seal import Sealer
from tests.support.redis import RedisServer

HMAC_KEY = "test-hmac-key-of-at-least-32-characters!"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


class Replica:
    """One replica's state, plus what its gateway was asked to do."""

    def __init__(self, url: str, timeout_ms: int = 250, session_ttl_s: int = 30, key: str = HMAC_KEY) -> None:
        store = RedisStore(connect(url, timeout_ms / 1000), Sealer(key), "sg:", uuid.uuid4().hex)
        self.gauge: list[bool] = []
        self.state = ReplicatedState(store, timeout_ms / 1000, session_ttl_s, self.gauge.append)
        self.terminated: list[tuple[str, str]] = []
        self.revoked: list[set[str]] = []

    async def start(self) -> Replica:
        await self.state.start(self._terminate, self.revoked.append)
        return self

    def _terminate(self, session_id: str, by: str) -> bool:
        self.terminated.append((session_id, by))
        return True


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[Any]:
    started: list[Replica] = []

    async def make(**kwargs: Any) -> Replica:
        replica = await Replica(redis_server.url, **kwargs).start()
        started.append(replica)
        return replica

    yield make
    for replica in started:
        await replica.state.aclose()
