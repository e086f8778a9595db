"""``start_if_stopped`` (docs/configuration.md): start a stopped instance, wait until its SSM agent is up.

The policy has already seen the instance as found (``input.ec2.state == "stopped"``) and allowed
the session; only then is the instance started. The client reads each step as a progress line
(``progress``), and the wait ends at ``start_timeout_s``. Connections racing to the same instance
share one start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from sshgate.aws.clients import AwsClients, Credentials, call
from sshgate.aws.errors import AwsError
from sshgate.aws.targets import Ec2Target
from sshgate.config import Ec2Resource

POLL_S = 1.0
Progress = Callable[[str], None]


class InstanceStarter:
    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients
        self._locks: dict[str, asyncio.Lock] = {}

    async def ensure_running(
        self, resource: Ec2Resource, target: Ec2Target, credentials: Credentials | None, progress: Progress
    ) -> Ec2Target:
        """``target`` once its instance runs and its agent answers; AwsError on a timeout."""
        if target.facts.state == "running":
            return target
        instance = target.target
        deadline = time.monotonic() + resource.start_timeout_s
        lock = self._locks.setdefault(instance, asyncio.Lock())
        async with lock:
            ec2 = self._clients.client("ec2", resource.region, credentials)
            progress(f"starting {resource.name} ({instance})")
            state = await self._wait_state(
                ec2, instance, ("pending", "running", "stopped"), deadline, resource
            )
            if state == "stopped":
                await call(f"starting instance {instance}", ec2.start_instances, InstanceIds=[instance])
            await self._wait_state(ec2, instance, ("running",), deadline, resource)
            progress("waiting for the SSM agent…")
            ssm = self._clients.client("ssm", resource.region, credentials)
            while not await self._agent_online(ssm, instance):
                await self._tick(deadline, resource, "its SSM agent did not come online")
        progress(f"{resource.name} is running")
        return Ec2Target(dataclasses.replace(target.facts, state="running"))

    async def _wait_state(
        self, ec2: Any, instance: str, wanted: tuple[str, ...], deadline: float, resource: Ec2Resource
    ) -> str:
        while True:
            response = await call(
                f"looking up instance {instance}",
                ec2.describe_instances,
                InstanceIds=[instance],
            )
            states = [
                i.get("State", {}).get("Name", "")
                for r in response.get("Reservations", [])
                for i in r.get("Instances", [])
            ]
            state = states[0] if states else "missing"
            if state in wanted:
                return state
            if state not in ("pending", "stopping", "stopped", "running"):
                raise AwsError(f"instance {instance} ({resource.name}) is {state}; it cannot be started")
            await self._tick(deadline, resource, f"it is still {state}")

    async def _agent_online(self, ssm: Any, instance: str) -> bool:
        response = await call(
            f"checking the SSM agent of {instance}",
            ssm.describe_instance_information,
            Filters=[{"Key": "InstanceIds", "Values": [instance]}],
        )
        return any(i.get("PingStatus") == "Online" for i in response.get("InstanceInformationList", []))

    async def _tick(self, deadline: float, resource: Ec2Resource, why: str) -> None:
        if time.monotonic() + POLL_S > deadline:
            raise AwsError(
                f"{resource.name} did not become reachable within {resource.start_timeout_s:g} s ({why})"
            )
        await asyncio.sleep(POLL_S)
