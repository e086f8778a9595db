"""boto3 clients per service, region and credential set, with ``aws.endpoints`` overrides.

boto3 blocks, so every call goes through :func:`call`, which runs it in a worker thread and
retries throttling with backoff; the event loop never waits on AWS.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sshgate.aws.errors import AwsError, explain, is_throttle
from sshgate.config import Aws

T = TypeVar("T")
_RETRIES = 4


@dataclass(frozen=True, slots=True)
class Credentials:
    """Temporary credentials from STS; ``None`` everywhere means the default chain."""

    access_key_id: str
    secret_access_key: str
    session_token: str


class AwsClients:
    """One boto3 client per (service, region, credentials), created on first use."""

    def __init__(self, config: Aws) -> None:
        self._config = config
        self._clients: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.Lock()
        self._session_made: Any = None

    @property
    def _session(self) -> Any:
        """boto3 is imported on first use: the ``recordings`` CLI on a local store never needs it,
        and it is a tenth of a second of every command's start."""
        if self._session_made is None:
            import boto3

            self._session_made = boto3.session.Session()
        return self._session_made

    def region(self, region: str | None) -> str:
        chosen = region or self._config.region or self._session.region_name
        if not chosen:
            raise AwsError("no AWS region: set the resource's region or aws.region")
        return str(chosen)

    def client(self, service: str, region: str | None = None, credentials: Credentials | None = None) -> Any:
        region_name = self.region(region)
        key = (service, region_name, credentials.access_key_id if credentials else "")
        with self._lock:
            if key not in self._clients:
                from botocore.config import Config as BotoConfig

                kwargs: dict[str, Any] = {
                    "region_name": region_name,
                    "config": BotoConfig(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5),
                }
                endpoint = self._config.endpoints.get(service)  # type: ignore[call-overload]
                if endpoint:
                    kwargs["endpoint_url"] = endpoint
                if credentials:
                    kwargs["aws_access_key_id"] = credentials.access_key_id
                    kwargs["aws_secret_access_key"] = credentials.secret_access_key
                    kwargs["aws_session_token"] = credentials.session_token
                self._clients[key] = self._session.client(service, **kwargs)
            return self._clients[key]


async def call(doing: str, func: Callable[..., T], /, **kwargs: Any) -> T:
    """Run a boto3 call in a thread; throttling is retried with jittered backoff, then explained."""
    for attempt in range(_RETRIES):
        try:
            return await asyncio.to_thread(func, **kwargs)
        except Exception as exc:  # every boto error becomes an AwsError
            error = explain(exc, doing)
            if not is_throttle(error) or attempt == _RETRIES - 1:
                raise error from exc
        await asyncio.sleep((0.2 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")
