"""Find the SSM target of an EC2 or ECS resource and the facts policies see about it."""

from __future__ import annotations

import random
import re
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
        """The task and container a session reaches: only what the resource allows (docs/login.md,
        "ECS targets"), described by the task found, never by the config's guess."""
        client = self._clients.client("ecs", resource.region, credentials)
        if task is not None and task_id(task) is None:
            raise AwsError(f"--task {task!r} is not an ECS task id or ARN")
        if task is not None and resource.task is not None and task_id(task) != task_id(resource.task):
            raise AwsError(f"{resource.name} reaches task {resource.task} only", f"asked for task {task}")
        requested = task or resource.task
        if requested is None:
            listed = await call(
                f"listing tasks of service {resource.service}",
                client.list_tasks,
                cluster=resource.cluster,
                serviceName=resource.service,
                desiredStatus="RUNNING",
            )
            refs = sorted(listed.get("taskArns", []))[:MAX_DESCRIBED]
            if not refs:
                raise AwsError(
                    f"service {resource.service} in cluster {resource.cluster} has no running task"
                )
        else:
            refs = [task_id(requested) or requested]
        described = await call(
            f"describing tasks of {resource.name}",
            client.describe_tasks,
            cluster=resource.cluster,
            tasks=refs,
            include=["TAGS"],
        )
        wanted = {task_id(ref) for ref in refs}
        found = [t for t in described.get("tasks", []) if _arn_id(t.get("taskArn")) in wanted]
        verdicts = [(t, out_of_scope(resource, t)) for t in found]
        reachable = sorted((t for t, why in verdicts if why is None), key=lambda t: str(t["taskArn"]))
        if not reachable:
            detail = "; ".join(why for _, why in verdicts if why) or "no such task in the cluster"
            if requested:
                raise AwsError(f"task {requested} is not a running task of {resource.name}", detail)
            raise AwsError(
                f"service {resource.service} has no running task {resource.name} may reach", detail
            )
        chosen = reachable[0]
        if chosen.get("enableExecuteCommand") is False:
            chosen_id = _arn_id(chosen["taskArn"])
            raise AwsError(f"ECS exec is not enabled on task {chosen_id} (run it with enableExecuteCommand)")
        match = _container(resource, chosen, container)
        runtime_id = match.get("runtimeId")
        task_arn = str(chosen["taskArn"])
        if not runtime_id:
            raise AwsError(f"container {match.get('name')} of task {_arn_id(task_arn)} has no runtime id yet")
        cluster_arn = str(chosen.get("clusterArn", resource.cluster))
        group = str(chosen.get("group", ""))
        service_arn = None
        if group.startswith("service:"):
            service_arn = cluster_arn.replace(":cluster/", ":service/", 1) + "/" + group[len("service:") :]
        facts = EcsFacts(
            cluster_arn=cluster_arn,
            task_arn=task_arn,
            container_name=str(match.get("name")),
            service_arn=service_arn,
            task_tags=tag_map(chosen.get("tags")),
        )
        return EcsTarget(facts, _arn_id(cluster_arn), _arn_id(task_arn), str(runtime_id))


MAX_DESCRIBED = 100  # DescribeTasks takes at most 100 tasks
_TASK_REF = re.compile(
    r"(?:arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:task/(?:[A-Za-z0-9_-]{1,255}/)?)?([A-Za-z0-9-]{1,64})"
)


def task_id(ref: str) -> str | None:
    """The id of a task named by id or ARN; None for anything else (a client's ``--task``)."""
    match = _TASK_REF.fullmatch(ref)
    return match.group(1) if match else None


def _arn_id(arn: object) -> str:
    return str(arn or "").rsplit("/", 1)[-1]


def out_of_scope(resource: EcsResource, task: dict[str, Any]) -> str | None:
    """Why a described task is not one ``resource`` may reach (for the audit log), or None."""
    cluster_arn = str(task.get("clusterArn", ""))
    if _arn_id(cluster_arn) != _arn_id(resource.cluster) or (
        resource.cluster.startswith("arn:") and cluster_arn != resource.cluster
    ):
        return f"task {task.get('taskArn')} runs in cluster {cluster_arn}"
    if resource.service is not None and task.get("group") != f"service:{_arn_id(resource.service)}":
        return f"task {task.get('taskArn')} is not of service {resource.service} (group {task.get('group')})"
    if task.get("lastStatus") != "RUNNING" or task.get("desiredStatus", "RUNNING") != "RUNNING":
        return f"task {task.get('taskArn')} is {task.get('lastStatus')} (desired {task.get('desiredStatus')})"
    return None


def _container(resource: EcsResource, task: dict[str, Any], container: str | None) -> dict[str, Any]:
    """The container asked for, if the resource offers it; else its default."""
    containers: list[dict[str, Any]] = task.get("containers", [])
    offered = resource.container_names or tuple(str(c.get("name")) for c in containers[:1])
    choice = container if container is not None else (offered[0] if offered else None)
    if choice is None or choice not in offered:
        raise AwsError(f"{resource.name} offers container {' or '.join(offered) or '(none)'}, not {choice}")
    match = next((c for c in containers if c.get("name") == choice), None)
    if match is None:
        names = ", ".join(str(c.get("name", "?")) for c in containers)
        raise AwsError(f"task {_arn_id(task.get('taskArn'))} has no container {choice} (it has {names})")
    return match
