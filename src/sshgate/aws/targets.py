"""Find the SSM target of an EC2 or ECS resource and the facts policies see about it."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sshgate.aws.clients import AwsClients, Credentials, call
from sshgate.aws.errors import AwsError
from sshgate.config import Ec2Resource, EcsResource
from sshgate.policy.input import Ec2Facts, EcsFacts

LOOKUP_TTL_S = 15.0
STARTABLE_STATES = ("pending", "stopping", "stopped")
_EPOCH = datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True, slots=True)
class Ec2Target:
    facts: Ec2Facts

    @property
    def target(self) -> str:
        return self.facts.instance_id


@dataclass(frozen=True, slots=True)
class EcsTarget:
    facts: EcsFacts
    cluster: str
    task_id: str
    runtime_id: str

    @property
    def target(self) -> str:
        return f"ecs:{self.cluster}_{self.task_id}_{self.runtime_id}"


def tag_map(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {t.get("Key", t.get("key", "")): t.get("Value", t.get("value", "")) for t in items or []}


def select_instance(
    found: list[tuple[str, dict[str, Any]]], select: Literal["one", "newest", "any"], what: str
) -> tuple[str, dict[str, Any]]:
    """Several instances behind one Name tag (an autoscaling group): running ones come first, then
    ``select`` decides: ``one`` refuses and names them, ``newest`` takes the last launched, ``any``
    spreads sessions at random."""
    running = [pair for pair in found if pair[1].get("State", {}).get("Name") == "running"]
    pool = running or found
    if len(pool) == 1:
        return pool[0]
    if select == "newest":
        return max(pool, key=lambda pair: (pair[1].get("LaunchTime") or _EPOCH, pair[1]["InstanceId"]))
    if select == "any":
        return random.choice(pool)
    ids = ", ".join(sorted(i["InstanceId"] for _, i in pool))
    kind = "running instances" if running else "instances"
    raise AwsError(
        f"{what} matches {len(pool)} {kind} ({ids}); name exactly one, or set select: newest or any"
    )


class TargetLookup:
    """Cached briefly: a burst of connections to one resource costs one lookup."""

    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients
        self._cache: dict[tuple[str, ...], tuple[float, Ec2Target | EcsTarget]] = {}

    def _cached(self, key: tuple[str, ...]) -> Ec2Target | EcsTarget | None:
        hit = self._cache.get(key)
        return hit[1] if hit and hit[0] > time.monotonic() else None

    async def ec2(self, resource: Ec2Resource, credentials: Credentials | None) -> Ec2Target:
        """The instance a session lands on: running, or one ``start_if_stopped`` may start."""
        target = await self.find_ec2(resource, credentials)
        state = target.facts.state
        if state != "running" and not (resource.start_if_stopped and state in STARTABLE_STATES):
            raise AwsError(f"instance {target.target} ({resource.name}) is {state}, not running")
        return target

    async def find_ec2(self, resource: Ec2Resource, credentials: Credentials | None) -> Ec2Target:
        """The resource's instance in whatever state it is (only running ones are cached)."""
        key = ("ec2", resource.name, resource.instance_id or resource.instance_name or "")
        if (hit := self._cached(key)) is not None:
            assert isinstance(hit, Ec2Target)
            return hit
        client = self._clients.client("ec2", resource.region, credentials)
        if resource.instance_id:
            kwargs: dict[str, Any] = {"InstanceIds": [resource.instance_id]}
            what = f"instance {resource.instance_id}"
        else:
            kwargs = {
                "Filters": [
                    {"Name": "tag:Name", "Values": [resource.instance_name]},
                    {"Name": "instance-state-name", "Values": ["running", *STARTABLE_STATES]},
                ]
            }
            what = f"the instance named {resource.instance_name}"
        response = await call(f"looking up {what}", client.describe_instances, **kwargs)
        found = [
            (r.get("OwnerId", ""), i)
            for r in response.get("Reservations", [])
            for i in r.get("Instances", [])
        ]
        if not found:
            raise AwsError(f"no EC2 instance found for {what} (resource {resource.name})")
        owner, instance = select_instance(found, resource.select, what)
        facts = Ec2Facts(
            instance_id=instance["InstanceId"],
            region=self._clients.region(resource.region),
            account_id=owner,
            state=instance.get("State", {}).get("Name", "unknown"),
            tags=tag_map(instance.get("Tags")),
        )
        target = Ec2Target(facts)
        if facts.state == "running" and resource.select != "any":  # `any` picks anew per session
            self._cache[key] = (time.monotonic() + LOOKUP_TTL_S, target)
        return target

    async def ecs(
        self, resource: EcsResource, credentials: Credentials | None, task: str | None, container: str | None
    ) -> EcsTarget:
        client = self._clients.client("ecs", resource.region, credentials)
        task_ref = task or resource.task
        if task_ref is None:
            listed = await call(
                f"listing tasks of service {resource.service}",
                client.list_tasks,
                cluster=resource.cluster,
                serviceName=resource.service,
                desiredStatus="RUNNING",
            )
            arns = listed.get("taskArns", [])
            if not arns:
                raise AwsError(
                    f"service {resource.service} in cluster {resource.cluster} has no running task"
                )
            task_ref = sorted(arns)[0]
        described = await call(
            f"describing task {task_ref}",
            client.describe_tasks,
            cluster=resource.cluster,
            tasks=[task_ref],
            include=["TAGS"],
        )
        tasks = described.get("tasks", [])
        if not tasks:
            raise AwsError(f"task {task_ref} not found in cluster {resource.cluster}")
        found = tasks[0]
        if found.get("lastStatus") not in (None, "RUNNING"):
            raise AwsError(f"task {task_ref} is {found.get('lastStatus')}, not running")
        if found.get("enableExecuteCommand") is False:
            raise AwsError(f"ECS exec is not enabled on task {task_ref} (run it with enableExecuteCommand)")
        wanted = container or resource.container
        containers = found.get("containers", [])
        match = next((c for c in containers if wanted is None or c.get("name") == wanted), None)
        if match is None:
            names = ", ".join(c.get("name", "?") for c in containers)
            raise AwsError(f"task {task_ref} has no container {wanted} (it has {names})")
        runtime_id = match.get("runtimeId")
        if not runtime_id:
            raise AwsError(f"container {match.get('name')} of task {task_ref} has no runtime id yet")
        task_arn = found["taskArn"]
        task_id = task_arn.rsplit("/", 1)[-1]
        cluster_arn = found.get("clusterArn", resource.cluster)
        service_arn = None
        if resource.service:
            service_arn = cluster_arn.replace(":cluster/", ":service/") + f"/{resource.service}"
        facts = EcsFacts(
            cluster_arn=cluster_arn,
            task_arn=task_arn,
            container_name=str(match.get("name")),
            service_arn=service_arn,
            task_tags=tag_map(found.get("tags")),
        )
        return EcsTarget(facts, cluster_arn.rsplit("/", 1)[-1], task_id, str(runtime_id))
