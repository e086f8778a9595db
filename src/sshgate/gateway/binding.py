"""Binding: the first resource a connection selects decides its native user, policy verdict,
recording and upstream, and every later channel of the connection shares them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sshgate.command import Route
from sshgate.config import Config, Ec2Resource, EcsResource, SshResource
from sshgate.gateway.refusal import Refusal
from sshgate.identity import Identity
from sshgate.native_secret import SecretError, parse_secret
from sshgate.native_users import NativeChoice, NoNativeUser, resolve_native_user
from sshgate.policy.decision import Decision, DecisionPoint
from sshgate.policy.input import ConnectionFacts, RequestFacts, session_input
from sshgate.recording.recorder import Recorder, RecordingError, SessionRecording
from sshgate.upstream.base import Upstream, UpstreamError
from sshgate.upstream.ssh import connect_ssh

AnyResource = SshResource | Ec2Resource | EcsResource


@dataclass(slots=True)
class Binding:
    resource: AnyResource
    native: NativeChoice
    decision: Decision
    recording: SessionRecording
    upstream: Upstream
    route: Route
    session_doc: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BindContext:
    """What the binder needs from the gateway, captured once per connection."""

    config: Config
    policy: DecisionPoint
    recorder: Recorder


def find_resource(config: Config, name: str) -> AnyResource:
    resource = config.resource(name)
    if resource is None:
        raise Refusal(f"unknown resource {name}; run 'formal list' to see yours", event="resource.unknown")
    return resource


def choose_native(resource: AnyResource, identity: Identity, requested: str | None) -> NativeChoice:
    try:
        return resolve_native_user(resource.name, resource.native_users, identity, requested)
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


async def connect_upstream(resource: AnyResource, native: NativeChoice) -> Upstream:
    try:
        credential = parse_secret(native.user.secret)
    except SecretError as exc:
        raise Refusal(
            f"native user {native.user.username} on {resource.name} is misconfigured; ask an administrator",
            reason=str(exc),
            event="secret.error",
        ) from None
    try:
        if isinstance(resource, SshResource):
            return await connect_ssh(resource, native.user.username, credential)
        raise UpstreamError(f"resource type {resource.type} is not supported by this gateway yet")
    except UpstreamError as exc:
        raise Refusal(str(exc), event="upstream.error") from None


async def start_recording(ctx: BindContext, session_id: str, meta: dict[str, Any]) -> SessionRecording:
    try:
        return await ctx.recorder.start_session(session_id, meta)
    except RecordingError as exc:
        raise Refusal(
            "session refused: its recording cannot be started", reason=str(exc), event="recording.error"
        ) from None
