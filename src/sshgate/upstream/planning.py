"""Planning an upstream: one planner per resource ``type``, chosen by :data:`PLANNERS`.

A plan is made before the session policy decides: it resolves the native user's credentials
and, for EC2/ECS, the target and the facts policies see about it (docs/policy.md). It connects
only after the policy allowed the session. Every failure is a :class:`Refusal` (an
``UpstreamError`` or ``AwsError`` among them) whose line the client may read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sshgate.aws.access import AwsAccess
from sshgate.aws.clients import Credentials
from sshgate.aws.instance_connect import push_instance_connect_key
from sshgate.aws.start import Progress
from sshgate.config import AnyResource, Ec2Resource, EcsResource, SshResource
from sshgate.identity import Identity
from sshgate.native_secret import AmbientIam, AssumeRole, NativeCredential, SecretError, parse_secret
from sshgate.native_users import NativeChoice
from sshgate.policy.input import ec2_input, ecs_input
from sshgate.refusal import Refusal
from sshgate.upstream.base import Upstream, UpstreamError
from sshgate.upstream.ssh import connect_ssh
from sshgate.upstream.ssm import SsmUpstream, ssh_through_ssm


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """Whom to connect as where. ``progress`` tells the client what takes time after the
    decision (starting an instance)."""

    resource: AnyResource
    native: NativeChoice
    identity: Identity
    task: str | None = None
    container: str | None = None
    progress: Progress = lambda _line: None


@dataclass(slots=True)
class UpstreamPlan:
    """What is known before the policy decision (AWS facts for the input), and how to connect after.

    ``insecure`` says why the upstream's identity is not checked, for the audit log."""

    policy_context: dict[str, Any]
    connect: Callable[[], Awaitable[Upstream]]
    insecure: str | None = None


Planner = Callable[[AwsAccess, PlanRequest], Awaitable[UpstreamPlan]]


def native_credential(resource: AnyResource, native: NativeChoice) -> NativeCredential:
    try:
        return parse_secret(native.user.secret)
    except SecretError as exc:
        raise Refusal(
            f"native user {native.user.username} on {resource.name} is misconfigured; ask an administrator",
            reason=str(exc),
            event="secret.error",
        ) from None


async def aws_credentials(
    aws: AwsAccess, resource: Ec2Resource | EcsResource, native: NativeChoice, identity: Identity
) -> Credentials | None:
    """The credentials AWS calls for this resource use: an assumed role, or None for the gateway's own."""
    credential = native_credential(resource, native)
    if isinstance(credential, AssumeRole):
        return await aws.roles.credentials(credential.role_arn, identity.name, resource.region)
    if isinstance(credential, AmbientIam) or (isinstance(resource, Ec2Resource) and resource.ssh):
        return None  # a key or password secret is for the sshd; AWS calls use the gateway's own
    raise Refusal(
        f"native user {native.user.username} on {resource.name} needs 'iam' or a role ARN secret",
        event="secret.error",
    )


async def plan_sshd(aws: AwsAccess, request: PlanRequest) -> UpstreamPlan:
    """An sshd the gateway reaches directly; an ``iam`` native user gets an Instance Connect key."""
    resource, native = request.resource, request.native
    assert isinstance(resource, SshResource)

    async def connect() -> Upstream:
        credential = native_credential(resource, native)
        user = native.user.username
        if isinstance(credential, AmbientIam | AssumeRole):
            credential = await _instance_connect_key(aws, resource, user, request.identity, credential)
        return await connect_ssh(resource, user, credential)

    insecure = None
    if resource.host_key_policy.insecure_accept_any:
        insecure = "host_key_policy.insecure_accept_any: the upstream host key is not checked"
    return UpstreamPlan({}, connect, insecure)


async def _instance_connect_key(
    aws: AwsAccess, resource: SshResource, user: str, identity: Identity, iam: AmbientIam | AssumeRole
) -> NativeCredential:
    """An ``iam`` native user on an sshd: a key pushed to ``ssh.instance_id`` with EC2 Instance Connect."""
    settings = resource.ssh
    if settings is None or not settings.instance_connect or settings.instance_id is None:
        raise UpstreamError(
            f"{resource.name}: an 'iam' native user needs ssh.instance_connect: true and ssh.instance_id"
        )
    credentials = None
    if isinstance(iam, AssumeRole):
        credentials = await aws.roles.credentials(iam.role_arn, identity.name, None)
    return await push_instance_connect_key(
        aws.clients, resource.name, settings.instance_id, None, credentials, user
    )


async def plan_ec2(aws: AwsAccess, request: PlanRequest) -> UpstreamPlan:
    """An EC2 instance over SSM (started first when ``start_if_stopped``), or its sshd through SSM."""
    resource, native = request.resource, request.native
    assert isinstance(resource, Ec2Resource)
    credential = native_credential(resource, native)
    credentials = await aws_credentials(aws, resource, native, request.identity)
    found = await aws.targets.ec2(resource, credentials)

    async def connect() -> Upstream:
        target = await aws.starter.ensure_running(resource, found, credentials, request.progress)
        if resource.ssh is None:
            return SsmUpstream(aws.clients, resource, target, credentials)
        return await ssh_through_ssm(
            aws.clients, resource, target, credentials, native.user.username, credential
        )

    return UpstreamPlan({"ec2": ec2_input(found.facts)}, connect)


async def plan_ecs(aws: AwsAccess, request: PlanRequest) -> UpstreamPlan:
    """A container of an ECS task, over SSM (ECS Exec)."""
    resource = request.resource
    assert isinstance(resource, EcsResource)
    credentials = await aws_credentials(aws, resource, request.native, request.identity)
    target = await aws.targets.ecs(resource, credentials, request.task, request.container)

    async def connect() -> Upstream:
        return SsmUpstream(aws.clients, resource, target, credentials)

    return UpstreamPlan({"ecs": ecs_input(target.facts)}, connect)


PLANNERS: Mapping[str, Planner] = {"ssh": plan_sshd, "ec2": plan_ec2, "ecs": plan_ecs}
