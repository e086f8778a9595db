"""The AWS side of the emulator: the session APIs moto lacks, served over AWS's JSON 1.1 protocol.

Targets come from the in-process moto backends, so whatever a test creates through the emulator's
endpoint is reachable: every running EC2 instance (``i-…``) is an online managed instance, and every
ECS task container is an exec target ``ecs:<cluster>_<taskId>_<runtimeId>``. Where moto's ECS
differs from ECS, ``patch_ecs_answer`` mends its answers: containers get a ``runtimeId`` (stable
across calls, ``runtime_id``) and a running exec agent, a task runs every container of its task
definition (moto starts only the first), and ListTasks honours ``serviceName`` (a service's tasks
are those whose ``group`` is ``service:NAME``, as ECS sets it; moto ignores the filter).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ecs.models import Container, ecs_backends
from moto.iam.models import get_account_id_from
from moto.ssm.models import ssm_backends

from sshgate.ssm.emulator.agent import SessionSpec
from sshgate.ssm.emulator.boot import Boots
from sshgate.ssm.emulator.documents import (
    ECS_DOCUMENT,
    DocumentError,
    ResolvedDocument,
    resolve,
    resolve_custom,
)

JSON_TYPE = "application/x-amz-json-1.1"
SSM_PREFIX = "AmazonSSM."
ECS_PREFIX = "AmazonEC2ContainerServiceV20141113."
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/")


class ApiError(Exception):
    """An AWS error response: ``__type`` code, message, HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status

    def body(self) -> dict[str, str]:
        return {"__type": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class Caller:
    account: str
    region: str
    access_key: str
    service: str = ""  # the SigV4 credential scope's service: ec2, ecs, ssm, sts, ...

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], default_region: str) -> Caller:
        match = _CREDENTIAL.search(headers.get("Authorization", ""))
        if match is None:
            return cls(DEFAULT_ACCOUNT_ID, default_region, "")
        key, region, service = match.group(1), match.group(2), match.group(3)
        account = headers.get("x-moto-account-id") or get_account_id_from(key)
        return cls(account, region, key, service)

    @property
    def owner(self) -> str:
        return f"arn:aws:iam::{self.account}:user/emulator"


def runtime_id(task_id: str, container_name: str) -> str:
    """A stable, realistic container runtime id: ``<taskId>-<10 digits>``."""
    digest = hashlib.sha256(f"{task_id}/{container_name}".encode()).hexdigest()
    return f"{task_id}-{int(digest[:12], 16) % 10**10:010d}"


def new_session_id() -> str:
    return f"emulator-{secrets.token_hex(9)[:17]}"


def ec2_instance(caller: Caller, instance_id: str) -> Any | None:
    try:
        return ec2_backends[caller.account][caller.region].get_instance(instance_id)
    except Exception:
        return None


def _ec2_target(caller: Caller, instance_id: str, boots: Boots) -> Any:
    instance = ec2_instance(caller, instance_id)
    if instance is None or not boots.agent_online(instance):
        raise ApiError("TargetNotConnected", f"{instance_id} is not connected.")
    return instance


def _complete_containers(backend: Any) -> None:
    """Give every task each container of its task definition (moto gives it only the first)."""
    for tasks in backend.tasks.values():
        for task in tasks.values():
            have = {c.name for c in task.containers}
            definition = backend.describe_task_definition(task.task_definition_arn)
            for spec in definition.container_definitions:
                if spec.get("name") not in have:
                    extra = Container(definition)  # type: ignore[abstract]  # moto marks it so, wrongly
                    extra.name, extra.image = spec.get("name"), spec.get("image")
                    extra.cpu, extra.memory = spec.get("cpu", 0), spec.get("memory")
                    extra.environment, extra.command = spec.get("environment"), spec.get("command")
                    task.containers.append(extra)


def _ecs_task(caller: Caller, cluster: str, task: str) -> Any:
    backend = ecs_backends[caller.account][caller.region]
    _complete_containers(backend)
    cluster_name = cluster.rsplit("/", 1)[-1]
    if cluster_name not in backend.clusters:
        raise ApiError("ClusterNotFoundException", "Cluster not found.")
    task_id = task.rsplit("/", 1)[-1]
    found = next((t for t in backend.tasks.get(cluster_name, {}).values() if t.id == task_id), None)
    if found is None:
        raise ApiError(
            "InvalidParameterException", f"The task {task} was not found in cluster {cluster_name}."
        )
    return found


def _ecs_target(caller: Caller, target: str) -> str:
    """Validate ``ecs:<cluster>_<taskId>_<runtimeId>``."""
    try:
        cluster, task_id, runtime = target[len("ecs:") :].rsplit("_", 2)
    except ValueError:
        raise ApiError("InvalidTarget", f"{target} is not a valid ECS target.") from None
    try:
        task = _ecs_task(caller, cluster, task_id)
    except ApiError:
        raise ApiError("TargetNotConnected", f"{target} is not connected.") from None
    if runtime not in {runtime_id(task.id, c.name) for c in task.containers}:
        raise ApiError("TargetNotConnected", f"{target} is not connected.")
    return target


def _document(caller: Caller, name: str | None, params: Mapping[str, Any]) -> ResolvedDocument:
    """AWS-managed documents first, then Session documents created in moto (ssm:CreateDocument)."""
    try:
        return resolve(name, params)
    except DocumentError:
        if not name:
            raise
    try:
        found = ssm_backends[caller.account][caller.region].get_document(name, "", "", "JSON")
    except Exception:
        raise DocumentError(f"document {name} does not exist") from None
    return resolve_custom(name, json.loads(found["Content"]), params)


def start_session_spec(
    caller: Caller, body: Mapping[str, Any], agent_version: str, kms: str | None, boots: Boots
) -> SessionSpec:
    target = body.get("Target")
    if not isinstance(target, str) or not 1 <= len(target) <= 400:
        raise ApiError("ValidationException", "Target must be a string of 1 to 400 characters.")
    container_mode = target.startswith("ecs:")
    if container_mode:
        _ecs_target(caller, target)
    elif target.startswith("i-"):
        _ec2_target(caller, target, boots)
    else:
        raise ApiError("TargetNotConnected", f"{target} is not connected.")
    params = body.get("Parameters") or {}
    if not isinstance(params, dict) or not all(isinstance(v, list) for v in params.values()):
        raise ApiError("ValidationException", "Parameters must map names to lists of strings.")
    try:
        document = _document(caller, body.get("DocumentName"), params)
    except DocumentError as exc:
        raise ApiError("InvalidDocument", str(exc)) from None
    return SessionSpec(
        session_id=new_session_id(),
        target=target,
        document=document,
        agent_version=agent_version,
        container_mode=container_mode,
        kms_key_id=kms,
        reason=str(body.get("Reason") or ""),
        owner=caller.owner,
    )


def execute_command_spec(
    caller: Caller, body: Mapping[str, Any], agent_version: str, kms: str | None
) -> tuple[SessionSpec, dict[str, Any]]:
    """ecs:ExecuteCommand: the SessionSpec plus the response fields other than ``session``."""
    if body.get("interactive") is not True:
        raise ApiError("InvalidParameterException", "Interactive is the only mode supported currently.")
    command = body.get("command")
    if not isinstance(command, str) or not command:
        raise ApiError("InvalidParameterException", "command is required.")
    task = _ecs_task(caller, str(body.get("cluster") or "default"), str(body.get("task") or ""))
    wanted = body.get("container")
    containers = [c for c in task.containers if wanted in (None, c.name)]
    if len(containers) != 1:
        raise ApiError(
            "InvalidParameterException", "The container name is missing or does not exist in the task."
        )
    container = containers[0]
    target = f"ecs:{task.cluster_name}_{task.id}_{runtime_id(task.id, container.name)}"
    spec = SessionSpec(
        session_id=new_session_id(),
        target=target,
        document=resolve(ECS_DOCUMENT, {"command": [command]}),
        agent_version=agent_version,
        container_mode=True,
        kms_key_id=kms,
        owner=caller.owner,
    )
    fields = {
        "clusterArn": task.cluster_arn,
        "containerArn": container.container_arn,
        "containerName": container.name,
        "interactive": True,
        "taskArn": task.task_arn,
    }
    return spec, fields


def patch_ecs_answer(
    caller: Caller, action: str, request: Mapping[str, Any], response: dict[str, Any], agent_version: str
) -> dict[str, Any]:
    """moto's answer to an ECS ``action`` as ECS would give it (see the module docstring)."""
    backend = ecs_backends[caller.account][caller.region]
    _complete_containers(backend)
    if action == "ListTasks" and request.get("serviceName"):
        group = "service:" + str(request["serviceName"]).rsplit("/", 1)[-1]
        ours = {t.task_arn for tasks in backend.tasks.values() for t in tasks.values() if t.group == group}
        response["taskArns"] = [arn for arn in response.get("taskArns", []) if arn in ours]
    elif action in ("RunTask", "DescribeTasks"):
        _patch_tasks(backend, response, agent_version)
    return response


def _patch_tasks(backend: Any, response: dict[str, Any], agent_version: str) -> None:
    """Every container of a task, each with a runtimeId and a running ExecuteCommandAgent."""
    for task in response.get("tasks") or []:
        task_id = str(task.get("taskArn", "")).rsplit("/", 1)[-1]
        model = next((t for ts in backend.tasks.values() for t in ts.values() if t.id == task_id), None)
        listed = task.get("containers") or []
        if model is not None and listed:
            named = {c.get("name") for c in listed}
            for extra in (c for c in model.containers if c.name not in named):
                listed.append(
                    {
                        **listed[0],
                        "name": extra.name,
                        "image": extra.image,
                        "containerArn": extra.container_arn,
                    }
                )
        task["enableExecuteCommand"] = True
        # moto walks a task through its whole lifecycle on successive describe calls; a task
        # nobody stopped stays RUNNING here, as it would on ECS.
        if task.get("desiredStatus", "RUNNING") == "RUNNING":
            task["lastStatus"] = "RUNNING"
        for container in task.get("containers") or []:
            container["runtimeId"] = runtime_id(task_id, str(container.get("name", "")))
            container["managedAgents"] = [
                {
                    "name": "ExecuteCommandAgent",
                    "lastStatus": "RUNNING",
                    "lastStartedAt": time.time(),
                    "reason": f"agent {agent_version}",
                }
            ]
            container["taskArn"] = task.get("taskArn")


def instance_information(
    caller: Caller, body: Mapping[str, Any], agent_version: str, boots: Boots
) -> dict[str, Any]:
    """DescribeInstanceInformation: every running moto instance whose agent is up is an online
    Linux managed node."""
    wanted: set[str] | None = None
    for entry in list(body.get("Filters") or []) + list(body.get("InstanceInformationFilterList") or []):
        key = entry.get("Key") or entry.get("key")
        if key in ("InstanceIds", "InstanceId"):
            values = entry.get("Values") or entry.get("valueSet") or []
            wanted = set(values) if wanted is None else wanted & set(values)
    backend = ec2_backends[caller.account][caller.region]
    items = []
    for reservation in backend.all_reservations():
        for instance in reservation.instances:
            if not boots.agent_online(instance) or (wanted is not None and instance.id not in wanted):
                continue
            items.append(
                {
                    "InstanceId": instance.id,
                    "PingStatus": "Online",
                    "LastPingDateTime": time.time(),
                    "AgentVersion": agent_version,
                    "IsLatestVersion": True,
                    "PlatformType": "Linux",
                    "PlatformName": "Amazon Linux",
                    "PlatformVersion": "2023",
                    "ResourceType": "EC2Instance",
                    "IPAddress": instance.private_ip or "",
                    "ComputerName": instance.private_dns_name or "",
                }
            )
    return {"InstanceInformationList": items}
