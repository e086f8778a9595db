"""The binding unit without an sshd or AWS: a fake upstream planner, a fake recorder, a policy
that answers what the test says, and the in-process shared state."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

import pytest

from sshgate.aws.access import AwsAccess
from sshgate.command import Route
from sshgate.config import Config
from sshgate.gateway.binding import BindContext, Binder, choose_native
from sshgate.identity import Identity
from sshgate.login import parse_login
from sshgate.metrics import Metrics
from sshgate.policy.decision import Decision, Stage
from sshgate.policy.input import ConnectionFacts, RequestFacts
from sshgate.recording.recorder import NULL_CHANNEL, ChannelKind, ChannelRecording, EndReason, EndStatus
from sshgate.refusal import Refusal
from sshgate.state.local import LocalState
from sshgate.upstream.base import Downstream, SessionRequest, UpstreamChannel
from sshgate.upstream.planning import PLANNERS, PlanRequest, UpstreamPlan, plan_sshd
from tests.support.audit_log import RecordedLog

ALICE = Identity("human", "alice@corp.com", "formal", None)
FACTS = ConnectionFacts("192.0.2.7", "SSH-2.0-OpenSSH_9.6", "publickey")
SHELL = RequestFacts("shell")
Action = Literal["allow", "block", "mfa"]


class FakeUpstream:
    kind = "fake"

    def __init__(self) -> None:
        self.closed = False

    async def open_session(self, request: SessionRequest, downstream: Downstream) -> UpstreamChannel:
        raise AssertionError("no channel is opened by a binding test")

    async def open_tcp(self, host: str, port: int, downstream: Downstream) -> UpstreamChannel:
        raise AssertionError("no channel is opened by a binding test")

    async def close(self) -> None:
        self.closed = True


class Planner:
    """Plans every resource to a fake upstream; ``gate`` holds its connection until set."""

    def __init__(self, fail: Refusal | None = None) -> None:
        self.upstreams: list[FakeUpstream] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.connecting = asyncio.Event()
        self.fail = fail

    async def __call__(self, aws: AwsAccess, request: PlanRequest) -> UpstreamPlan:
        async def connect() -> FakeUpstream:
            self.connecting.set()
            await self.gate.wait()
            if self.fail is not None:
                raise self.fail
            upstream = FakeUpstream()
            self.upstreams.append(upstream)
            return upstream

        return UpstreamPlan({"ec2": {"instance_id": f"i-{request.resource.name}"}}, connect, "not checked")


class Recording:
    def __init__(self, session_id: str, meta: dict[str, Any]) -> None:
        self.session_id = session_id
        self.meta = meta
        self.decisions: list[dict[str, Any]] = []
        self.ended: tuple[EndStatus, EndReason | None] | None = None

    def open_channel(self, kind: ChannelKind, meta: dict[str, Any]) -> ChannelRecording:
        return NULL_CHANNEL

    def note_decision(self, decision: dict[str, Any]) -> None:
        self.decisions.append(decision)

    async def close(self, status: EndStatus = "closed", *, end_reason: EndReason | None = None) -> None:
        self.ended = (status, end_reason)


class Recorder:
    def __init__(self) -> None:
        self.sessions: list[Recording] = []

    async def start(self) -> list[str]:
        return []

    async def start_session(self, session_id: str, meta: dict[str, Any]) -> Recording:
        recording = Recording(session_id, meta)
        self.sessions.append(recording)
        return recording

    async def aclose(self) -> None:
        return None

    async def retire(self, stopping: asyncio.Event) -> None:
        return None


class Policy:
    """Answers each stage with the action the test set; records the input documents."""

    def __init__(self, session: Action = "allow", request: Action | None = None) -> None:
        self.actions: dict[Stage, Action | None] = {"session": session, "request": request}
        self.inputs: list[tuple[Stage, dict[str, Any]]] = []

    async def decide(self, stage: Stage, input_doc: dict[str, Any]) -> Decision:
        self.inputs.append((stage, input_doc))
        action = self.actions[stage] or "allow"
        return Decision(action, stage, message="not now" if action == "block" else None, reason="test")

    def has_rule(self, stage: Stage) -> bool:
        return self.actions[stage] is not None

    async def aclose(self, grace_s: float = 0.0) -> None:
        return None


class World:
    def __init__(self, tmp_path: Path, policy: Policy | None = None, planner: Planner | None = None) -> None:
        self.config = Config.model_validate(
            {
                "resources": [
                    {
                        "name": name,
                        "type": "ssh",
                        "hostname": "127.0.0.1",
                        "host_key_policy": {"insecure_accept_any": True},
                        "native_users": [{"username": "ubuntu", "secret": "password:x", "default": True}],
                    }
                    for name in ("web-1", "db-1")
                ],
                "limits": {"max_sessions_per_user": 1},
            }
        )
        self.policy = policy or Policy()
        self.planner = planner or Planner()
        self.recorder = Recorder()
        self.ctx = BindContext(
            self.config,
            self.policy,
            self.recorder,
            AwsAccess(self.config.aws),
            planners={"ssh": self.planner},
        )
        self.state = LocalState(str(tmp_path))
        self.metrics = Metrics()
        self.log = RecordedLog()
        self.step_ups: list[str] = []
        self.said: list[str] = []

    async def step_up(self, resource: str) -> dict[str, Any]:
        self.step_ups.append(resource)
        return {"result": "reused", "signed_in_at": 1}

    def binder(self, login: str = "idp:human:alice@corp.com", session_id: str = "s1") -> Binder:
        return Binder(
            self.ctx,
            self.state,
            self.metrics,
            self.log,
            session_id,
            parse_login(login),
            ALICE,
            FACTS,
            self.step_up,
            self.said.append,
        )

    async def live(self) -> list[str]:
        return [s.session_id for s in await self.state.sessions()]


async def test_binds_once_and_releases_everything(tmp_path: Path) -> None:
    world = World(tmp_path)
    binder = world.binder("idp:human:alice@corp.com+web-1")
    route = binder.route_for(None)
    binding = await binder.binding(route, SHELL)
    assert (binding.resource.name, binding.native.user.username, binding.upstream.kind) == (
        "web-1",
        "ubuntu",
        "fake",
    )
    assert await binder.binding(binder.route_for(Route("web-1")), SHELL) is binding
    with pytest.raises(Refusal, match="bound to web-1; open a new connection for db-1") as exc:
        await binder.binding(Route("db-1"), SHELL)
    assert exc.value.event == "binding.conflict"
    assert await world.live() == ["s1"]
    (recording,) = world.recorder.sessions
    assert recording.meta["client_ip"] == "192.0.2.7" and recording.decisions[0]["action"] == "allow"
    stage, doc = world.policy.inputs[0]
    assert stage == "session" and doc["ec2"]["instance_id"] == "i-web-1"  # the plan's facts reach the policy
    assert ("upstream.insecure_host_key", {"resource": "web-1", "reason": "not checked"}) in world.log.events
    await binder.release("upstream")
    assert world.planner.upstreams[0].closed
    assert recording.ended == ("closed", "upstream")
    assert await world.live() == []


async def test_refusals_before_anything_is_acquired(tmp_path: Path) -> None:
    world = World(tmp_path, Policy(session="block"))
    binder = world.binder()
    with pytest.raises(Refusal, match="unknown resource nope") as unknown:
        await binder.binding(Route("nope"), SHELL)
    assert unknown.value.event == "resource.unknown"
    await binder.release("client")
    assert await world.live() == []

    blocked = world.binder(session_id="s2")
    with pytest.raises(Refusal, match="Blocked by policy: not now") as exc:
        await blocked.binding(Route("web-1"), SHELL)
    assert exc.value.event == "policy.block"
    assert not world.planner.connecting.is_set() and world.recorder.sessions == []
    await blocked.release("client")
    assert await world.live() == []
    with pytest.raises(Refusal, match="--task and --container apply to ECS resources only"):
        await world.binder(session_id="s3").binding(Route("web-1", task="abc"), SHELL)


async def test_a_user_at_the_session_cap_is_refused(tmp_path: Path) -> None:
    world = World(tmp_path)
    first = world.binder(session_id="s1")
    await first.binding(Route("web-1"), SHELL)
    with pytest.raises(Refusal, match=r"too many open sessions for alice@corp.com \(limit 1\)"):
        await world.binder(session_id="s2").binding(Route("web-1"), SHELL)
    await first.release("client")
    third = world.binder(session_id="s3")
    await third.binding(Route("db-1"), SHELL)
    await third.release("client")


async def test_a_client_gone_while_connecting_leaves_nothing_open(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.planner.gate.clear()
    binder = world.binder()
    binder.start(Route("web-1"), SHELL)
    await asyncio.wait_for(world.planner.connecting.wait(), 1)
    release = asyncio.ensure_future(binder.release("client"))
    await asyncio.sleep(0)
    world.planner.gate.set()  # the upstream connects after the client left
    await asyncio.wait_for(release, 1)
    (recording,) = world.recorder.sessions
    assert recording.ended == ("aborted", "client")
    assert all(u.closed for u in world.planner.upstreams)
    assert await world.live() == []


async def test_an_upstream_that_refuses_ends_the_recording(tmp_path: Path) -> None:
    planner = Planner(fail=Refusal("web-1 is unreachable", reason="connect refused", event="upstream.error"))
    world = World(tmp_path, planner=planner)
    binder = world.binder()
    with pytest.raises(Refusal, match="web-1 is unreachable"):
        await binder.binding(Route("web-1"), SHELL)
    (recording,) = world.recorder.sessions
    assert recording.ended == ("closed", "refused")
    failed = world.log.named("upstream.connect")
    assert failed[0]["result"] == "error" and failed[0]["reason"] == "connect refused"
    await binder.release("client")
    assert await world.live() == []


async def test_mfa_steps_up_and_requests_are_gated(tmp_path: Path) -> None:
    world = World(tmp_path, Policy(session="mfa", request="block"))
    binder = world.binder()
    binding = await binder.binding(Route("web-1"), SHELL)
    assert world.step_ups == ["web-1"]
    assert world.recorder.sessions[0].decisions[0]["mfa"] == {"result": "reused", "signed_in_at": 1}
    assert binder.gates_requests
    with pytest.raises(Refusal, match="Blocked by policy: not now") as exc:
        await binder.check_request(binding, "exec", command="rm -rf /")
    assert exc.value.event == "request.blocked"
    stage, doc = world.policy.inputs[-1]
    assert stage == "request" and doc["request"]["command"] == "rm -rf /"
    await binder.release("client")


async def test_forwards_need_a_selected_resource(tmp_path: Path) -> None:
    world = World(tmp_path)
    plain = world.binder()
    assert not plain.selected
    with pytest.raises(Refusal, match="no resource selected"):
        await plain.forward_route()
    with pytest.raises(Refusal, match="conflicts with @ubuntu"):
        world.binder("idp:human:alice@corp.com@ubuntu").route_for(Route("web-1", "root"))
    plain.start(Route("web-1"), SHELL)
    assert plain.selected and (await plain.forward_route()).resource == "web-1"
    await plain.release("client")


async def test_each_resource_type_has_a_planner_and_sshd_plans_connect_later(tmp_path: Path) -> None:
    world = World(tmp_path)
    assert set(PLANNERS) == {"ssh", "ec2", "ecs"}
    web = world.config.resources[0]
    plan = await plan_sshd(world.ctx.aws, PlanRequest(web, choose_native(web, ALICE, None), ALICE))
    assert plan.policy_context == {}
    assert plan.insecure == "host_key_policy.insecure_accept_any: the upstream host key is not checked"
