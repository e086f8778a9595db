"""The policy input document of docs/policy.md, built from what the gateway knows (no I/O)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sshgate.config import Ec2Resource, EcsResource, SshResource
from sshgate.identity import Identity
from sshgate.native_users import NativeChoice

# What a request asks for; "sftp" is one file operation of an sftp channel (request stage only).
RequestKind = Literal["shell", "exec", "subsystem", "sftp", "port_forward"]


@dataclass(frozen=True, slots=True)
class ConnectionFacts:
    client_ip: str
    client_version: str
    auth_method: str


@dataclass(frozen=True, slots=True)
class RequestFacts:
    kind: RequestKind
    command: str | None = None
    subsystem: str | None = None
    pty: bool = False
    host: str | None = None
    port: int | None = None


def resource_input(resource: SshResource | Ec2Resource | EcsResource) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": resource.name, "type": resource.type, "tags": dict(resource.tags)}
    if isinstance(resource, SshResource):
        doc["hostname"] = resource.hostname
        doc["port"] = resource.port
    return doc


def session_input(
    identity: Identity,
    native: NativeChoice,
    resource: SshResource | Ec2Resource | EcsResource,
    connection: ConnectionFacts,
    request: RequestFacts | None,
    ec2: dict[str, Any] | None = None,
    ecs: dict[str, Any] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The ``input`` of ``data.formal.v2.session``; ``ec2``/``ecs`` only for those resources."""
    now = time.time() if now is None else now
    conn: dict[str, Any] = {
        "client_ip": connection.client_ip,
        "client_version": connection.client_version,
        "auth_method": connection.auth_method,
    }
    if request is not None:  # None: decided before any request (a +resource login, formal list)
        conn["request"] = request.kind
        conn["pty"] = request.pty
        if request.command is not None:
            conn["command"] = request.command
        if request.subsystem is not None:
            conn["subsystem"] = request.subsystem
    doc: dict[str, Any] = {
        "stage": "session",
        "user": identity.as_policy_input(),
        "native_user": native.user.username,
        "native_user_source": native.source,
        "resource": resource_input(resource),
        "connection": conn,
        "time": {
            "unix": int(now),
            "rfc3339": datetime.fromtimestamp(int(now), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }
    if ec2 is not None:
        doc["ec2"] = ec2
    if ecs is not None:
        doc["ecs"] = ecs
    return doc


def identity_key(doc: Mapping[str, Any]) -> str | None:
    """Who an input document is about (``type:email`` or ``type:name``), or None if it does not say."""
    user = doc.get("user")
    if not isinstance(user, Mapping):
        return None
    name = user.get("email", user.get("name"))
    return f"{user.get('type')}:{name}" if isinstance(name, str) else None


def request_input(
    session_doc: dict[str, Any],
    kind: RequestKind,
    *,
    command: str | None = None,
    subsystem: str | None = None,
    operation: str | None = None,
    path: str | None = None,
    target_path: str | None = None,
    host: str | None = None,
    port: int | None = None,
) -> dict[str, Any]:
    """The ``input`` of ``data.formal.v2.request``: the session's input plus this one request.

    Absent facts are left out (undefined in Rego) rather than ``null``, as in the session input.
    """
    facts = {
        "command": command,
        "subsystem": subsystem,
        "operation": operation,
        "path": path,
        "target_path": target_path,
        "host": host,
        "port": port,
    }
    request = {"kind": kind, **{k: v for k, v in facts.items() if v is not None}}
    return {**session_doc, "stage": "request", "request": request}


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    return "aws-us-gov" if region.startswith("us-gov-") else "aws"


@dataclass(frozen=True, slots=True)
class Ec2Facts:
    """What the EC2 lookup found about the instance a session lands on."""

    instance_id: str
    region: str
    account_id: str
    state: str
    tags: Mapping[str, str]


def ec2_input(facts: Ec2Facts) -> dict[str, Any]:
    arn = f"arn:{_partition(facts.region)}:ec2:{facts.region}:{facts.account_id}:instance/{facts.instance_id}"
    return {
        "instance_id": facts.instance_id,
        "instance_arn": arn,
        "region": facts.region,
        "account_id": facts.account_id,
        "state": facts.state,
        "tags": dict(facts.tags),
    }


@dataclass(frozen=True, slots=True)
class EcsFacts:
    """What the ECS lookup found about the task (and container) a session lands on."""

    cluster_arn: str
    task_arn: str
    container_name: str
    service_arn: str | None = None
    task_tags: Mapping[str, str] = field(default_factory=dict)


def ecs_input(facts: EcsFacts) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "cluster_arn": facts.cluster_arn,
        "task_arn": facts.task_arn,
        "task_id": facts.task_arn.rsplit("/", 1)[-1],
        "task_tags": dict(facts.task_tags),
        "container_name": facts.container_name,
    }
    if facts.service_arn is not None:
        doc["service_arn"] = facts.service_arn
    return doc
