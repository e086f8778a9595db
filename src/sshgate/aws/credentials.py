"""Native users of EC2/ECS resources: ambient credentials, or an assumed role per person.

A role is assumed with ``SourceIdentity`` = the user's email so CloudTrail names the person;
credentials are cached per (role, person) until five minutes before they expire.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from sshgate.aws.clients import AwsClients, Credentials, call

REFRESH_BEFORE_S = 300
_SESSION_NAME = re.compile(r"[^\w+=,.@-]")


def session_name(identity: str) -> str:
    """RoleSessionName allows ``[\\w+=,.@-]{2,64}``."""
    cleaned = _SESSION_NAME.sub("-", f"sshgate-{identity}")
    return cleaned[:64]


@dataclass(slots=True)
class _Cached:
    credentials: Credentials
    expires: float


class RoleCache:
    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients
        self._cache: dict[tuple[str, str], _Cached] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def credentials(self, role_arn: str, identity: str, region: str | None) -> Credentials:
        key = (role_arn, identity)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._cache.get(key)
            if cached and cached.expires - REFRESH_BEFORE_S > time.time():
                return cached.credentials
            sts = self._clients.client("sts", region)
            response = await call(
                f"assuming role {role_arn}",
                sts.assume_role,
                RoleArn=role_arn,
                RoleSessionName=session_name(identity),
                SourceIdentity=identity,
            )
            raw = response["Credentials"]
            creds = Credentials(raw["AccessKeyId"], raw["SecretAccessKey"], raw["SessionToken"])
            self._cache[key] = _Cached(creds, raw["Expiration"].timestamp())
            return creds
