"""Binding: the first resource a connection selects decides its native user, policy verdict,
recording and upstream, and every later channel of the connection shares them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sshgate.aws.clients import AwsClients, Credentials
from sshgate.aws.credentials import RoleCache
from sshgate.aws.errors import AwsError
from sshgate.aws.start import InstanceStarter, Progress
from sshgate.aws.targets import Ec2Target, EcsTarget, TargetLookup, task_id
from sshgate.command import Route
from sshgate.config import Aws, Config, Ec2Resource, EcsResource, SshResource
from sshgate.gateway.refusal import Refusal
from sshgate.identity import Identity
from sshgate.native_secret import AmbientIam, AssumeRole, NativeCredential, SecretError, parse_secret
from sshgate.native_users import NativeChoice, NoNativeUser, resolve_native_user
from sshgate.policy.decision import Decision, DecisionPoint
from sshgate.policy.input import ConnectionFacts, RequestFacts, ec2_input, ecs_input, session_input
from sshgate.recording.recorder import EndReason, EndStatus, Recorder, RecordingError, SessionRecording
from sshgate.upstream.base import Upstream, UpstreamError
from sshgate.upstream.ssh import connect_ssh
from sshgate.upstream.ssm import SsmUpstream, push_instance_connect_key, ssh_through_ssm

AnyResource = SshResource | Ec2Resource | EcsResource
T = TypeVar("T")


@dataclass(slots=True)
class Binding:
    resource: AnyResource
    native: NativeChoice
    decision: Decision
    recording: SessionRecording
    upstream: Upstream
    route: Route
    session_doc: dict[str, Any] = field(default_factory=dict)


class Held:
    """The recording and upstream a binding has acquired so far, so that whoever ends the
    connection releases them whatever step the setup was in.

    Each acquiring step runs as its own task and stores what it yields here before anyone can be
    cancelled: a binder cancelled while it waits (the client left) loses nothing, and a step that
    completes after that is still released."""

    def __init__(self) -> None:
        self.recording: SessionRecording | None = None
        self.upstream: Upstream | None = None
        self._steps: set[asyncio.Task[Any]] = set()

    async def recording_from(self, step: Awaitable[SessionRecording]) -> SessionRecording:
        """Start the recording; runs to its end even if the caller is cancelled (a recorder may
        work in a thread that cannot be interrupted)."""

        def keep(recording: SessionRecording) -> None:
            self.recording = recording

        return await self._acquire(step, keep, interruptible=False)

    async def upstream_from(self, step: Awaitable[Upstream]) -> Upstream:
        """Connect upstream; cancelled with its caller, and closed later if it connected anyway."""

        def keep(upstream: Upstream) -> None:
            self.upstream = upstream

        return await self._acquire(step, keep, interruptible=True)

    async def _acquire(self, step: Awaitable[T], keep: Callable[[T], None], interruptible: bool) -> T:
        async def run() -> T:
            value = await step
            keep(value)  # no await in between: kept before any cancellation can land
            return value

        task = asyncio.ensure_future(run())
        self._steps.add(task)
        task.add_done_callback(_settled)
        task.add_done_callback(self._steps.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if interruptible:
                task.cancel()
            raise

    async def release(self, status: EndStatus, end_reason: EndReason) -> None:
        """Wait for steps in flight, then close the upstream and end the recording. Idempotent."""
        while self._steps:
            await asyncio.wait(set(self._steps))
        upstream, self.upstream = self.upstream, None
        recording, self.recording = self.recording, None
        try:
            if upstream is not None:
                await upstream.close()
        finally:
            if recording is not None:
                await recording.close(status, end_reason=end_reason)


def _settled(task: asyncio.Task[Any]) -> None:
    """Retrieve a step's outcome: its caller may have left, and the failure is theirs to report."""
    if not task.cancelled():
        task.exception()


class AwsAccess:
    """The gateway's AWS clients, per-person role credentials, target lookups and starts."""

    def __init__(self, config: Aws) -> None:
        self.clients = AwsClients(config)
        self.roles = RoleCache(self.clients)
        self.targets = TargetLookup(self.clients)
        self.starter = InstanceStarter(self.clients)


def _nothing_discovered() -> Sequence[AnyResource]:
    return ()


@dataclass(frozen=True, slots=True)
class BindContext:
    """What the binder needs from the gateway, captured once per connection."""

    config: Config
    policy: DecisionPoint
    recorder: Recorder
    aws: AwsAccess
    discovered: Callable[[], Sequence[AnyResource]] = _nothing_discovered  # the last discovery round

    def resources(self) -> list[AnyResource]:
        """Configured resources, then discovered ones (whose names never repeat a configured one)."""
        return [*self.config.resources, *self.discovered()]

    def resource(self, name: str) -> AnyResource | None:
        return next((r for r in self.resources() if r.name == name), None)


@dataclass(slots=True)
class UpstreamPlan:
    """What is known before the policy decision (AWS facts for the input), and how to connect after."""

    policy_context: dict[str, Any]
    connect: Callable[[], Awaitable[Upstream]]


def find_resource(ctx: BindContext, name: str) -> AnyResource:
    resource = ctx.resource(name)
    if resource is None:
        raise Refusal(f"unknown resource {name}; run 'formal list' to see yours", event="resource.unknown")
    return resource


def choose_native(resource: AnyResource, identity: Identity, requested: str | None) -> NativeChoice:
    try:
        ambient = not isinstance(resource, SshResource)
        return resolve_native_user(resource.name, resource.native_users, identity, requested, ambient)
    except NoNativeUser as exc:
        raise Refusal(str(exc), event="native_user.none") from None


async def decide_session(
    ctx: BindContext,
    identity: Identity,
    resource: AnyResource,
    native: NativeChoice,
    connection: ConnectionFacts,
    request: RequestFacts,
    context: dict[str, Any] | None = None,
) -> tuple[Decision, dict[str, Any]]:
    doc = session_input(identity, native, resource, connection, request, **(context or {}))
    return await ctx.policy.decide("session", doc), doc


def _credential(resource: AnyResource, native: NativeChoice) -> NativeCredential:
    try:
        return parse_secret(native.user.secret)
    except SecretError as exc:
        raise Refusal(
            f"native user {native.user.username} on {resource.name} is misconfigured; ask an administrator",
            reason=str(exc),
            event="secret.error",
        ) from None


async def aws_credentials(
    ctx: BindContext, resource: Ec2Resource | EcsResource, native: NativeChoice, identity: Identity
) -> Credentials | None:
    """The credentials AWS calls for this resource use: an assumed role, or None for the gateway's own."""
    credential = _credential(resource, native)
    if isinstance(credential, AssumeRole):
        return await ctx.aws.roles.credentials(credential.role_arn, identity.name, resource.region)
    if isinstance(credential, AmbientIam) or (isinstance(resource, Ec2Resource) and resource.ssh):
        return None  # a key or password secret is for the sshd; AWS calls use the gateway's own
    raise Refusal(
        f"native user {native.user.username} on {resource.name} needs 'iam' or a role ARN secret",
        event="secret.error",
    )


def selection_conflict(resource: AnyResource, reached: Mapping[str, Any] | None, route: Route) -> str | None:
    """Why a channel's ``--task`` / ``--container`` cannot be served: they apply to ECS resources
    only, and a later channel may not name another task or container than the connection reached
    (``reached``: the ``ecs`` policy input of the binding; None while binding)."""
    if not isinstance(resource, EcsResource):
        return "--task and --container apply to ECS resources only" if route.task or route.container else None
    if reached is None:
        return None
    if route.task is not None and task_id(route.task) != reached["task_id"]:
        return (
            f"this connection reaches task {reached['task_id']}; open a new connection for task {route.task}"
        )
    if route.container is not None and route.container != reached["container_name"]:
        return (
            f"this connection reaches container {reached['container_name']}; open a new connection for "
            f"container {route.container}"
        )
    return None


async def plan_upstream(
    ctx: BindContext,
    resource: AnyResource,
    native: NativeChoice,
    identity: Identity,
    route: Route,
    progress: Progress,
) -> UpstreamPlan:
    """Resolve credentials and, for EC2/ECS, the target and the facts policies see about it.

    ``progress`` tells the client what takes time after the decision (starting an instance)."""
    if (conflict := selection_conflict(resource, None, route)) is not None:
        raise Refusal(conflict, event="route.invalid")
    if isinstance(resource, SshResource):

        async def connect_sshd() -> Upstream:
            credential = _credential(resource, native)
            user = native.user.username
            try:
                if isinstance(credential, AmbientIam | AssumeRole):
                    credential = await _instance_connect_key(ctx, resource, user, identity, credential)
                return await connect_ssh(resource, user, credential)
            except (UpstreamError, AwsError) as exc:
                raise Refusal(str(exc), reason=exc.detail, event="upstream.error") from None

        return UpstreamPlan({}, connect_sshd)
    credential = _credential(resource, native)
    try:
        credentials = await aws_credentials(ctx, resource, native, identity)
        target: Ec2Target | EcsTarget
        if isinstance(resource, Ec2Resource):
            target = await ctx.aws.targets.ec2(resource, credentials)
            context: dict[str, Any] = {"ec2": ec2_input(target.facts)}
        else:
            target = await ctx.aws.targets.ecs(resource, credentials, route.task, route.container)
            context = {"ecs": ecs_input(target.facts)}
    except AwsError as exc:
        raise Refusal(str(exc), reason=exc.detail, event="upstream.error") from None

    async def connect_ssm() -> Upstream:
        nonlocal target
        if isinstance(resource, Ec2Resource):
            assert isinstance(target, Ec2Target)
            try:
                target = await ctx.aws.starter.ensure_running(resource, target, credentials, progress)
            except AwsError as exc:
                raise Refusal(str(exc), reason=exc.detail, event="upstream.error") from None
        if isinstance(resource, Ec2Resource) and resource.ssh is not None:
            assert isinstance(target, Ec2Target)
            try:
                return await ssh_through_ssm(
                    ctx.aws.clients, resource, target, credentials, native.user.username, credential
                )
            except UpstreamError as exc:
                raise Refusal(str(exc), reason=exc.detail, event="upstream.error") from None
        return SsmUpstream(ctx.aws.clients, resource, target, credentials)

    return UpstreamPlan(context, connect_ssm)


async def _instance_connect_key(
    ctx: BindContext, resource: SshResource, user: str, identity: Identity, iam: AmbientIam | AssumeRole
) -> NativeCredential:
    """An ``iam`` native user on an sshd: a key pushed to ``ssh.instance_id`` with EC2 Instance Connect."""
    settings = resource.ssh
    if settings is None or not settings.instance_connect or settings.instance_id is None:
        raise UpstreamError(
            f"{resource.name}: an 'iam' native user needs ssh.instance_connect: true and ssh.instance_id"
        )
    credentials = None
    if isinstance(iam, AssumeRole):
        credentials = await ctx.aws.roles.credentials(iam.role_arn, identity.name, None)
    return await push_instance_connect_key(
        ctx.aws.clients, resource.name, settings.instance_id, None, credentials, user
    )


async def start_recording(ctx: BindContext, session_id: str, meta: dict[str, Any]) -> SessionRecording:
    try:
        return await ctx.recorder.start_session(session_id, meta)
    except RecordingError as exc:
        raise Refusal(
            "session refused: its recording cannot be started", reason=str(exc), event="recording.error"
        ) from None
