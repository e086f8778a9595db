"""A hostile or broken SSM agent (issue 11, item 9): every malformed payload it sends ends that
session cleanly. The client is told one ``sshgate:`` line, the recording is closed, the SSM
session is terminated, the audit log has the reason, nothing hangs, and the gateway serves the
next session normally.

Real ssh -> sshgate -> sshgate-aws-emulator, whose agent is made hostile with its fault switch
(``tamper``: the agent's own messages of one kind, each in a well-formed frame around the payload
given here)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.support.emulator import (
    aws_client,
    configure_faults,
    create_command_document,
    emulated_aws_gateway,
    emulator_process,
    emulator_sessions,
)
from tests.support.gateway import Client, GatewayProcess

DEEP = "[" * 100_000 + "]" * 100_000


@dataclass
class World:
    url: str
    instance_id: str
    task_id: str


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with emulator_process() as url:
        create_command_document(url)
        instance = aws_client(url, "ec2").run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)
        ecs = aws_client(url, "ecs")
        ecs.create_cluster(clusterName="prod")
        ecs.register_task_definition(
            family="api", containerDefinitions=[{"name": "app", "image": "busybox", "memory": 128}]
        )
        task = ecs.run_task(
            cluster="prod", taskDefinition="api", launchType="FARGATE", enableExecuteCommand=True
        )
        yield World(
            url, instance["Instances"][0]["InstanceId"], task["tasks"][0]["taskArn"].rsplit("/", 1)[-1]
        )


@pytest.fixture(scope="module")
def gateway(
    world: World, keys: Keys, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = base_config(keys, upstream)
    iam = [{"username": "ops", "secret": "iam", "default": True}]
    config["resources"] = [
        {"name": "box", "type": "ec2", "instance_id": world.instance_id, "native_users": iam},
        {"name": "api", "type": "ecs", "cluster": "prod", "task": world.task_id, "native_users": iam},
    ]
    with emulated_aws_gateway(tmp_path_factory.mktemp("hostile-gw"), config, world.url) as gw:
        yield gw


@pytest.fixture(scope="module")
def alice(gateway: GatewayProcess, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(gateway, keys.alice, tmp_path_factory.mktemp("alice-hostile"))


# (tamper, payload, what the client is told was malformed, login, command, stdin)
EC2_EXEC = ("alice+box", "echo from-box", b"")
ECS_EXEC = ("alice+api", "echo from-task; sleep 1", b"")
ECS_CAT = ("alice+api", "cat", b"typed into the task\n")
CASES: dict[str, tuple[str, str, str, tuple[str, str, bytes]]] = {
    "exit-code-5000-digits": ("exit_code", "EXIT_CODE: " + "9" * 5000, "exit code", EC2_EXEC),
    "exit-code-overflow": ("exit_code", "EXIT_CODE: 99999999999999999999", "exit code", EC2_EXEC),
    "exit-code-text": ("exit_code", "EXIT_CODE: lots", "exit code", EC2_EXEC),
    "handshake-request-deep": (
        "handshake_request",
        '{"AgentVersion":' + DEEP + "}",
        "handshake request",
        EC2_EXEC,
    ),
    "handshake-request-types": (
        "handshake_request",
        '{"AgentVersion": 3, "RequestedClientActions": {"ActionType": []}}',
        "handshake request",
        EC2_EXEC,
    ),
    "handshake-request-many-actions": (  # each is answered, and the answer kept until acked
        "handshake_request",
        json.dumps({"AgentVersion": "3.3", "RequestedClientActions": [{"ActionType": "x"}] * 5000}),
        "handshake request",
        EC2_EXEC,
    ),
    "handshake-complete-text": (
        "handshake_complete",
        '{"HandshakeTimeToComplete": "soon"}',
        "handshake complete",
        EC2_EXEC,
    ),
    "handshake-complete-infinite": (
        "handshake_complete",
        '{"HandshakeTimeToComplete": 1e999}',
        "handshake complete",
        EC2_EXEC,
    ),
    "handshake-complete-list": (
        "handshake_complete",
        '{"HandshakeTimeToComplete": [1]}',
        "handshake complete",
        EC2_EXEC,
    ),
    "channel-closed-infinite": ("channel_closed", '{"SchemaVersion": 1e999}', "channel_closed", ECS_EXEC),
    "channel-closed-types": (
        "channel_closed",
        '{"Output": ["x"], "SchemaVersion": []}',
        "channel_closed",
        ECS_EXEC,
    ),
    "channel-closed-deep": ("channel_closed", '{"Output":' + DEEP + "}", "channel_closed", ECS_EXEC),
    "channel-closed-not-json": ("channel_closed", "not json {", "channel_closed", ECS_EXEC),
    "ack-sequence-text": (
        "acknowledge",
        '{"AcknowledgedMessageSequenceNumber": "0"}',
        "acknowledge",
        ECS_CAT,
    ),
    "ack-sequence-huge": (
        "acknowledge",
        '{"AcknowledgedMessageType": "input_stream_data", "AcknowledgedMessageId": "x", '
        '"AcknowledgedMessageSequenceNumber": 1e400}',
        "acknowledge",
        ECS_CAT,
    ),
    "ack-deep": ("acknowledge", DEEP, "acknowledge", ECS_CAT),
}


@pytest.fixture
def hostile(world: World) -> Iterator[None]:
    yield
    configure_faults(world.url, tamper=None, tamper_payload="")


def _recording(gateway: GatewayProcess, session_id: str) -> dict[str, Any]:
    root = Path(gateway.config["data_dir"]) / "recordings"
    deadline = time.monotonic() + 10
    while True:
        (path,) = root.glob(f"*/{session_id}/session.json")
        doc: dict[str, Any] = json.loads(path.read_text())
        if doc["status"] != "active" or time.monotonic() > deadline:
            return doc
        time.sleep(0.05)


def _audited(gateway: GatewayProcess, what: str, since: int) -> list[dict[str, Any]]:
    """Audit events since line ``since`` that give the malformed ``what`` as the reason a channel
    ended or was refused."""
    marker = f"malformed {what}"
    return [
        e
        for e in gateway.lines[since:]
        if e.get("event") in ("channel.close", "channel.refused")
        and marker in str(e.get("upstream_error") or e.get("reason") or "")
    ]


def _live_sessions(world: World) -> list[str]:
    return [s["SessionId"] for s in emulator_sessions(world.url) if s["Status"] != "Terminated"]


@pytest.mark.usefixtures("hostile")
@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_agent_payload_ends_the_session_cleanly(
    world: World, gateway: GatewayProcess, alice: Client, case: str
) -> None:
    tamper, payload, what, (login, command, stdin) = CASES[case]
    configure_faults(world.url, tamper=tamper, tamper_payload=payload)
    resource = login.split("+")[1]
    since, started = len(gateway.lines), time.monotonic()
    result = alice.ssh(login, command, input=stdin, timeout=30)
    assert time.monotonic() - started < 25, "the session hung"
    line = f"sshgate: the SSM agent on {resource} sent a malformed {what}; the session was ended\n"
    assert result.stderr == line.encode(), result
    assert result.returncode in (1, 255)
    # The audit log has the reason; that session's recording is closed, not left active.
    deadline = time.monotonic() + 10
    while not (reasons := _audited(gateway, what, since)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reasons, gateway.raw[-10:]
    assert _recording(gateway, reasons[-1]["session_id"])["status"] == "closed"
    # The SSM session is over on the service too.
    deadline = time.monotonic() + 10
    while _live_sessions(world) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _live_sessions(world) == []


def test_gateway_serves_normally_after_hostile_agents(world: World, alice: Client) -> None:
    configure_faults(world.url, tamper=None, tamper_payload="")
    result = alice.ssh("alice+box", "echo fine")
    assert (result.stdout, result.stderr, result.returncode) == (b"fine\n", b"", 0)
    result = alice.ssh("alice+api", "cat", input=b"still fine\n")
    assert (result.stdout, result.returncode) == (b"still fine\n", 0), result.stderr
