"""Binding: the first resource a connection selects decides its native user, policy verdict,
recording and upstream, and every later channel of the connection shares them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sshgate.aws.access import AwsAccess
from sshgate.aws.targets import task_id
from sshgate.command import USAGE, Route
from sshgate.config import AnyResource, Config, EcsResource, SshResource
from sshgate.identity import Identity
from sshgate.login import Login
from sshgate.metrics import Metrics
from sshgate.native_users import NativeChoice, resolve_native_user
from sshgate.policy.decision import Decision, DecisionPoint
from sshgate.policy.input import ConnectionFacts, RequestFacts, RequestKind, request_input, session_input
from sshgate.recording.recorder import EndReason, EndStatus, Recorder, RecordingError, SessionRecording
from sshgate.refusal import Refusal
from sshgate.state.base import LiveSession, SharedState
from sshgate.upstream.base import Upstream
from sshgate.upstream.planning import PLANNERS, Planner, PlanRequest

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
    planners: Mapping[str, Planner] = field(default_factory=lambda: PLANNERS)  # per resource type

    def resources(self) -> list[AnyResource]:
        """Configured resources, then discovered ones (whose names never repeat a configured one)."""
        return [*self.config.resources, *self.discovered()]

    def resource(self, name: str) -> AnyResource | None:
        return next((r for r in self.resources() if r.name == name), None)


def find_resource(ctx: BindContext, name: str) -> AnyResource:
    resource = ctx.resource(name)
    if resource is None:
        raise Refusal(f"unknown resource {name}; run 'formal list' to see yours", event="resource.unknown")
    return resource


def choose_native(resource: AnyResource, identity: Identity, requested: str | None) -> NativeChoice:
    ambient = not isinstance(resource, SshResource)
    return resolve_native_user(resource.name, resource.native_users, identity, requested, ambient)


async def decide_session(
    ctx: BindContext,
    identity: Identity,
    resource: AnyResource,
    native: NativeChoice,
    connection: ConnectionFacts,
    request: RequestFacts | None,
    context: dict[str, Any] | None = None,
) -> tuple[Decision, dict[str, Any]]:
    doc = session_input(identity, native, resource, connection, request, **(context or {}))
    return await ctx.policy.decide("session", doc), doc


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


async def start_recording(ctx: BindContext, session_id: str, meta: dict[str, Any]) -> SessionRecording:
    try:
        return await ctx.recorder.start_session(session_id, meta)
    except RecordingError as exc:
        raise Refusal(
            "session refused: its recording cannot be started", reason=str(exc), event="recording.error"
        ) from None


StepUp = Callable[[str], Awaitable[dict[str, Any]]]


class Binder:
    """Binds one authenticated connection, once, to the first resource it selects: route →
    resource → native user → upstream plan → session decision → recording → upstream.

    :meth:`binding` returns the binding or raises a :class:`Refusal`; whatever a failed or
    cancelled setup acquired is released (:class:`Held`), and :meth:`release` releases the rest
    when the connection ends. Channels ask the binder for their binding and request decisions.
    """

    def __init__(
        self,
        ctx: BindContext,
        shared: SharedState,
        metrics: Metrics,
        log: Any,
        session_id: str,
        login: Login,
        identity: Identity,
        connection: ConnectionFacts,
        step_up: StepUp,
        say: Callable[[str], None],
    ) -> None:
        self.ctx = ctx
        self.shared = shared
        self.metrics = metrics
        self.log = log
        self.session_id = session_id
        self.login = login
        self.identity = identity
        self.connection = connection
        self._step_up = step_up
        self._say = say
        self._task: asyncio.Task[Binding] | None = None
        self._held = Held()
        self._live: LiveSession | None = None

    # Routes

    def route_for(self, route: Route | None) -> Route:
        """Merge the login's ``+resource@native`` with a ``formal`` command's route."""
        login = self.login
        if route is None:
            if not login.resource:
                raise Refusal(USAGE, exit_status=2, event="route.missing")
            return Route(login.resource, login.native_user)
        if login.native_user and route.native_user and login.native_user != route.native_user:
            raise Refusal(f"native user {route.native_user} conflicts with @{login.native_user} in the login")
        if route.native_user is None and login.native_user:
            return Route(
                route.resource, login.native_user, route.shell, route.container, route.task, route.command
            )
        return route

    @property
    def selected(self) -> bool:
        """Whether the connection has a resource: in its login, or bound by a session channel."""
        return bool(self.login.resource) or self._task is not None

    async def forward_route(self) -> Route:
        """A forward's route: the login's, else that of the binding a session channel started."""
        if self.login.resource:
            return Route(self.login.resource, self.login.native_user)
        if self._task is None:
            raise Refusal("no resource selected: log in as LOGIN+resource to forward ports")
        return (await asyncio.shield(self._task)).route

    # The binding

    def start(self, route: Route, request: RequestFacts | None) -> asyncio.Task[Binding]:
        """Begin binding (once per connection; later calls get the first one's task)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._bind(route, request))
            self._task.add_done_callback(lambda t: None if t.cancelled() else t.exception())
        return self._task

    async def binding(self, route: Route, request: RequestFacts) -> Binding:
        """The connection's binding, if ``route`` is what it is bound to. Shielded: a channel that
        closes while the binding is set up must not cancel it for the connection's next channel
        (that one waited forever on the cancelled task); the connection's end cancels it."""
        binding = await asyncio.shield(self.start(route, request))
        if route.resource != binding.resource.name:
            raise Refusal(
                f"this connection is bound to {binding.resource.name}; open a new connection for "
                f"{route.resource}",
                event="binding.conflict",
            )
        if route.native_user and route.native_user != binding.native.user.username:
            raise Refusal(
                f"this connection logs in as {binding.native.user.username} on "
                f"{binding.resource.name}; open a new connection for {route.native_user}",
                event="binding.conflict",
            )
        if conflict := selection_conflict(binding.resource, binding.session_doc.get("ecs"), route):
            raise Refusal(conflict, event="binding.conflict")
        return binding

    async def _bind(self, route: Route, request: RequestFacts | None) -> Binding:
        identity = self.identity
        started = time.monotonic()
        try:
            limit = self.ctx.config.limits.max_sessions_per_user
            # Registered before the answer: a connection lost meanwhile still unregisters it.
            self._live = LiveSession(
                self.session_id, self.shared.replica, identity.name, route.resource, time.time()
            )
            if not await self.shared.open_session(self._live, limit):
                self._live = None
                raise Refusal(
                    f"too many open sessions for {identity.name} (limit {limit}); close one first",
                    event="limit.sessions_per_user",
                )
            resource = find_resource(self.ctx, route.resource)
            native = choose_native(resource, identity, route.native_user)
            if (conflict := selection_conflict(resource, None, route)) is not None:
                raise Refusal(conflict, event="route.invalid")
            plan = await self.ctx.planners[resource.type](
                self.ctx.aws,
                PlanRequest(resource, native, identity, route.task, route.container, self._progress),
            )
            decision, session_doc = await decide_session(
                self.ctx, identity, resource, native, self.connection, request, plan.policy_context
            )
            self._log_decision(decision, resource=resource.name, native_user=native.user.username)
            step_up: dict[str, Any] | None = None
            if decision.action == "mfa":
                step_up = await self._step_up(resource.name)
            elif not decision.allowed:
                raise Refusal(decision.client_text(), reason=decision.reason, event="policy.block")
            recording = await self._held.recording_from(
                start_recording(
                    self.ctx,
                    self.session_id,
                    {
                        "user": identity.as_policy_input(),
                        "resource": resource.name,
                        "resource_type": resource.type,
                        "native_user": native.user.username,
                        "client_ip": self.connection.client_ip,
                        "client_version": self.connection.client_version,
                        "auth_method": self.connection.auth_method,
                    },
                )
            )
            recording.note_decision(
                {"stage": "session", "action": decision.action, "reason": decision.reason}
                | ({"mfa": step_up} if step_up is not None else {})
            )
            self.log.info(
                "session.start",
                resource=resource.name,
                resource_type=resource.type,
                native_user=native.user.username,
                native_user_source=native.source,
                identity=identity.name,
                client_ip=self.connection.client_ip,
            )
            try:
                upstream = await self._held.upstream_from(plan.connect())
            except Refusal as exc:
                self.log.warning(
                    "upstream.connect",
                    resource=resource.name,
                    result="error",
                    reason=exc.reason,
                    seconds=round(time.monotonic() - started, 4),
                )
                await self._held.release("closed", "refused")
                raise
            except Exception:
                await self._held.release("closed", "error")
                raise
            if plan.insecure is not None:
                self.log.warning("upstream.insecure_host_key", resource=resource.name, reason=plan.insecure)
            seconds = time.monotonic() - started
            self.log.info(
                "upstream.connect",
                resource=resource.name,
                result="ok",
                upstream=upstream.kind,
                seconds=round(seconds, 4),
            )
            self.metrics.upstream_connected(resource.type, seconds)
            self.metrics.session_started()
            return Binding(resource, native, decision, recording, upstream, route, session_doc)
        except Refusal as exc:
            self.log.warning(
                "session.refused", resource=route.resource, reason=exc.reason, event_kind=exc.event
            )
            known = self.ctx.resource(route.resource)
            outcome = "blocked" if exc.event == "policy.block" else "refused"
            self.metrics.session_refused(
                route.resource if known else "", known.type if known else "", outcome
            )
            raise

    def _progress(self, text: str) -> None:
        self.log.info("session.progress", message=text)
        self._say(text)

    def note(self, fields: dict[str, Any]) -> None:
        """Facts for session.json learnt after binding (who terminated it); none without a recording."""
        if self._held.recording is not None:
            self._held.recording.note(fields)

    async def release(self, end_reason: EndReason) -> None:
        """The client is gone: stop a setup in progress and release what the binding holds. The
        session counts against the user's cap until its upstream and recording are released."""
        task = self._task
        try:
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
                if task.cancelled():
                    await self._held.release("aborted", "client")
                elif task.exception() is not None:
                    await self._held.release("closed", "error")
                else:
                    bound = task.result()
                    self.metrics.session_ended(bound.resource.name, bound.resource.type, "closed")
                    await self._held.release("closed", end_reason)
        finally:
            if self._live is not None:
                await self.shared.close_session(self._live)

    # Request decisions

    def _log_decision(self, decision: Decision, **fields: Any) -> None:
        self.metrics.policy_decision(decision.stage, decision.action, decision.eval_seconds)
        self.log.info(
            "policy.decision",
            stage=decision.stage,
            action=decision.action,
            reason=decision.reason,
            message=decision.message,
            eval_ms=round(decision.eval_seconds * 1000, 3),
            **fields,
        )

    @property
    def gates_requests(self) -> bool:
        """Whether a ``request`` rule decides each request (else they are only recorded)."""
        return self.ctx.policy.has_rule("request")

    async def request_decision(self, binding: Binding, kind: RequestKind, **facts: Any) -> Decision:
        """The request stage: one decision per shell, exec, subsystem, sftp change or forward, audited."""
        facts = {k: v for k, v in facts.items() if v is not None}
        decision = await self.ctx.policy.decide("request", request_input(binding.session_doc, kind, **facts))
        self._log_decision(decision, kind=kind, **facts)
        binding.recording.note_decision(
            {"stage": "request", "action": decision.action, "reason": decision.reason, "kind": kind, **facts}
        )
        if not decision.allowed:
            self.log.warning(
                "request.blocked", kind=kind, message=decision.message, reason=decision.reason, **facts
            )
        return decision

    async def check_request(self, binding: Binding, kind: RequestKind, **facts: Any) -> None:
        """Refuse the request when a ``request`` rule blocks it."""
        if not self.gates_requests:
            return
        decision = await self.request_decision(binding, kind, **facts)
        if not decision.allowed:
            raise Refusal(decision.client_text(), reason=decision.reason, event="request.blocked")
