"""Both engines give the same decisions on the shipped policies; the OPA path fails closed."""

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sshgate.config import Policies
from sshgate.policy.decision import Decision, Stage
from sshgate.policy.embedded import EmbeddedDecisionPoint
from sshgate.policy.loader import build_decision_point
from sshgate.policy.opa import OpaDecisionPoint
from sshgate.policy.rego import RegorusEngine
from sshgate.policy.sources import load_modules

from .conftest import POLICIES, FakeOpa

WEDNESDAY_10H, SATURDAY_10H = 1789552800, 1789812000


def _input(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "stage": "session",
        "user": {
            "type": "human",
            "email": "alice@corp.com",
            "provider": "formal",
            "login": "alice",
            "groups": [],
        },
        "native_user": "ubuntu",
        "native_user_source": "group",
        "resource": {"name": "web-1", "type": "ssh", "hostname": "10.0.0.5", "port": 22, "tags": {}},
        "connection": {
            "client_ip": "203.0.113.7",
            "auth_method": "publickey",
            "request": "shell",
            "pty": True,
        },
        "time": {"unix": WEDNESDAY_10H, "rfc3339": "2026-09-16T10:00:00Z"},
    }
    for key, value in changes.items():
        doc[key] = {**doc[key], **value} if isinstance(value, dict) and key in doc else value
    return doc


def _request(groups: list[str], **request: Any) -> dict[str, Any]:
    return _input(stage="request", user={"groups": groups}, request=request)


_EC2 = {"instance_id": "i-1", "region": "eu-west-1", "account_id": "1", "state": "running"}
_SERVICE = "arn:aws:ecs:eu-west-1:1:service/main/"
_ECS = {
    "cluster_arn": "arn:aws:ecs:eu-west-1:1:cluster/main",
    "task_arn": "t/1",
    "task_id": "1",
    "task_tags": {},
}

# (stage, input, expected action, expected client message)
CASES: list[tuple[Stage, dict[str, Any], str, str | None]] = [
    ("session", _input(), "allow", None),
    (
        "session",
        _input(user={"email": "john@corp.com"}, native_user="devops"),
        "block",
        "john@corp.com may not use the devops account",
    ),
    ("session", _input(native_user="devops"), "allow", None),
    (
        "session",
        _input(user={"email": "bob@corp.com"}, native_user="root", native_user_source="explicit"),
        "block",
        "bob@corp.com may not choose the root account explicitly",
    ),
    ("session", _input(native_user="root", native_user_source="explicit"), "allow", None),
    (
        "session",
        _input(ec2={**_EC2, "tags": {"env": "prod"}}),
        "block",
        "production instances need the oncall group",
    ),
    ("session", _input(user={"groups": ["oncall"]}, ec2={**_EC2, "tags": {"env": "prod"}}), "allow", None),
    (
        "session",
        _input(ecs={**_ECS, "container_name": "envoy", "service_arn": _SERVICE + "orders"}),
        "block",
        "container envoy is reserved for the platform group",
    ),
    (
        "session",
        _input(ecs={**_ECS, "container_name": "envoy", "service_arn": _SERVICE + "payments"}),
        "block",
        "container envoy is reserved for the platform group; the payments service needs the payments group",
    ),
    ("session", _input(ecs={**_ECS, "container_name": "app"}), "allow", None),
    (
        "session",
        _input(user={"groups": ["contractors"]}, time={"unix": SATURDAY_10H}),
        "block",
        "contractors may connect Monday to Friday, 08:00-18:00 UTC",
    ),
    ("session", _input(user={"groups": ["contractors"]}), "allow", None),
    (
        "request",
        _request(["auditors"], kind="sftp", operation="remove", path="/srv/a"),
        "block",
        "auditors have read-only sftp (remove /srv/a refused)",
    ),
    ("request", _request(["dev"], kind="sftp", operation="remove", path="/srv/a"), "allow", None),
    (
        "request",
        _request([], kind="port_forward", host="10.9.9.9", port=22),
        "block",
        "port forwarding to 10.9.9.9:22 is not allowed",
    ),
    ("request", _request([], kind="port_forward", host="db.internal", port=5432), "allow", None),
    (
        "request",
        _request([], kind="exec", command="sudo reboot"),
        "block",
        '"sudo reboot" needs the sre group',
    ),
    ("request", _request([], kind="exec", command="uptime"), "allow", None),
    ("request", _request([], kind="subsystem", subsystem="sftp"), "allow", None),
]


@pytest.fixture
async def opa_point(fake_opa: FakeOpa) -> AsyncIterator[OpaDecisionPoint]:
    point = OpaDecisionPoint(fake_opa.url, "allow", 2000)
    yield point
    await point.aclose()


def _seen(decision: Decision) -> tuple[str, str | None, str]:
    return decision.action, decision.message, decision.reason


async def test_engines_agree_on_the_shipped_policies(opa_point: OpaDecisionPoint, fake_opa: FakeOpa) -> None:
    embedded = await build_decision_point(Policies(paths=[str(POLICIES)]))
    assert isinstance(embedded, EmbeddedDecisionPoint)
    try:
        for stage, doc, action, message in CASES:
            local, remote = await embedded.decide(stage, doc), await opa_point.decide(stage, doc)
            assert (local.action, local.message) == (action, message), (stage, doc)
            assert _seen(remote) == _seen(local), (stage, doc)
            assert local.eval_seconds > 0 and remote.eval_seconds > 0
    finally:
        await embedded.aclose()
    assert fake_opa.requests.count("/v1/data/formal/v2/request") == sum(s == "request" for s, *_ in CASES)


@pytest.mark.parametrize("default", ["allow", "block"])
async def test_opa_undefined_takes_default_action(fake_opa: FakeOpa, default: Any) -> None:
    # Without gateway.rego nothing defines `session`: the server answers {} (undefined).
    fake_opa.engine = RegorusEngine.compile(load_modules([str(POLICIES / "ec2_tags.rego")]))
    point = OpaDecisionPoint(fake_opa.url, default, 2000)
    try:
        decision = await point.decide("session", _input())
    finally:
        await point.aclose()
    assert (decision.action, decision.reason) == (default, "session undefined: default_action")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_opa_unreachable_is_policy_unavailable() -> None:
    point = OpaDecisionPoint(f"http://127.0.0.1:{_closed_port()}", "allow", 2000)
    try:
        decision = await point.decide("session", _input())
    finally:
        await point.aclose()
    assert decision.client_text() == "Blocked by policy: policy unavailable"
    assert "ClientConnectorError" in decision.reason


async def test_opa_denies_at_the_deadline(opa_point: OpaDecisionPoint, fake_opa: FakeOpa) -> None:
    fake_opa.mode = "hang"
    point = OpaDecisionPoint(fake_opa.url, "allow", 100)
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        decision = await point.decide("session", _input())
    finally:
        await point.aclose()
    assert 0.1 <= loop.time() - start < 0.5
    assert decision.message == "policy unavailable"
    assert decision.reason == f"policy timeout: OPA at {fake_opa.url} did not answer within 100 ms"


@pytest.mark.parametrize(
    ("mode", "reason"), [("garbage", "ContentTypeError"), ("error", "ClientResponseError")]
)
async def test_opa_bad_answers_fail_closed(
    opa_point: OpaDecisionPoint, fake_opa: FakeOpa, mode: str, reason: str
) -> None:
    fake_opa.mode = mode
    decision = await opa_point.decide("request", _request([], kind="exec", command="ls"))
    assert (decision.action, decision.message, decision.stage) == ("block", "policy unavailable", "request")
    assert reason in decision.reason


def test_opa_url_must_be_a_server_root() -> None:
    with pytest.raises(Exception, match="expected http"):
        OpaDecisionPoint("http://127.0.0.1:8181/v1/data", "allow", 500)
