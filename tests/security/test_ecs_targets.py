"""ECS targets as an attacker tries them: ``--task`` and ``--container`` reach only what the resource
allows (docs/login.md, "ECS targets"), and the policy input describes the task actually reached.

Real ssh -> sshgate -> sshgate-aws-emulator (moto behind it). The cluster holds tasks of the
resource's service, of another service, a standalone task, a stopped task of the service, and a
task of the same service name in another cluster; every task runs two containers (app, sidecar).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sshgate.ssm.emulator.aws import runtime_id
from tests.conftest import Keys, Upstream, base_config
from tests.support.emulator import aws_client, emulated_aws_gateway, emulator_process, emulator_sessions
from tests.support.gateway import Client, GatewayProcess, control_master

SERVICE_ARN = "arn:aws:ecs:us-east-1:123456789012:service/prod/api"

# john (ops) is blocked with a message that repeats what the policy saw of the task.
POLICY = """package formal.v2

import rego.v1

session := {"action": "block", "type": "block_with_formal_message", "message": msg} if {
\tinput.user.email == "john@corp.com"
\tmsg := sprintf("saw task=%s service=%s container=%s team=%s", [
\t\tinput.ecs.task_id,
\t\tobject.get(input.ecs, "service_arn", "none"),
\t\tinput.ecs.container_name,
\t\tobject.get(input.ecs.task_tags, "team", "none"),
\t])
}
"""


@dataclass
class EcsWorld:
    url: str
    api: list[str]  # running tasks of service api in cluster prod, sorted by ARN
    payments: str  # the one of them tagged team=payments (ids are random, so either place)
    other: str  # a task of service "other"
    lone: str  # a task of no service
    stopped: str  # a stopped task of service api
    staging: str  # a task of service api in cluster staging

    def sessions_since(self, before: int) -> list[dict[str, Any]]:
        return emulator_sessions(self.url)[before:]


def _task_id(response: dict[str, Any]) -> str:
    return str(response["tasks"][0]["taskArn"]).rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def world() -> Iterator[EcsWorld]:
    with emulator_process() as url:
        ecs = aws_client(url, "ecs")
        for cluster in ("prod", "staging"):
            ecs.create_cluster(clusterName=cluster)
        ecs.register_task_definition(
            family="api",
            containerDefinitions=[
                {"name": "app", "image": "busybox", "memory": 128},
                {"name": "sidecar", "image": "busybox", "memory": 64},
            ],
        )

        def run(cluster: str, group: str | None, **extra: Any) -> str:
            kwargs: dict[str, Any] = {
                "cluster": cluster,
                "taskDefinition": "api",
                "launchType": "FARGATE",
                "enableExecuteCommand": True,
            }
            if group:
                kwargs["group"] = group
            return _task_id(ecs.run_task(**kwargs, **extra))

        payments = run("prod", "service:api", tags=[{"key": "team", "value": "payments"}])
        api = [payments, run("prod", "service:api")]
        arns = {
            t["taskArn"].rsplit("/", 1)[-1]: t["taskArn"]
            for t in ecs.describe_tasks(cluster="prod", tasks=api)["tasks"]
        }
        stopped = run("prod", "service:api")
        ecs.stop_task(cluster="prod", task=stopped, reason="test")
        yield EcsWorld(
            url,
            sorted(api, key=lambda t: arns[t]),
            payments,
            run("prod", "service:other", tags=[{"key": "team", "value": "secret"}]),
            run("prod", None),
            stopped,
            run("staging", "service:api"),
        )


@pytest.fixture(scope="module")
def ecs_gateway(
    world: EcsWorld, keys: Keys, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = base_config(keys, upstream)
    iam = [{"username": "exec", "secret": "iam", "default": True}]
    config["resources"] = [
        {
            "name": "api-svc",
            "type": "ecs",
            "cluster": "prod",
            "service": "api",
            "container": "app",
            "native_users": iam,
        },
        {
            "name": "api-task",
            "type": "ecs",
            "cluster": "prod",
            "task": world.api[0],
            "containers": ["app", "sidecar"],
            "native_users": iam,
        },
        {"name": "lone", "type": "ecs", "cluster": "prod", "task": world.lone, "native_users": iam},
    ]
    root = tmp_path_factory.mktemp("ecs-targets-gw")
    with emulated_aws_gateway(root, config, world.url, ("ecs", "ssm", "sts"), POLICY) as gw:
        yield gw


@pytest.fixture(scope="module")
def alice(ecs_gateway: GatewayProcess, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(ecs_gateway, keys.alice, tmp_path_factory.mktemp("alice-ecs"))


@pytest.fixture(scope="module")
def john(ecs_gateway: GatewayProcess, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(ecs_gateway, keys.john, tmp_path_factory.mktemp("john-ecs"))


def _target(task: str, container: str) -> str:
    return f"ecs:prod_{task}_{runtime_id(task, container)}"


def _reached(world: EcsWorld, client: Client, command: str) -> str:
    """Run ``command`` (it must succeed) and return the one ECS exec target it opened."""
    before = len(emulator_sessions(world.url))
    result = client.ssh("alice", command)
    assert (result.stdout, result.returncode) == (b"here\n", 0), result.stderr
    (session,) = world.sessions_since(before)
    return str(session["Target"])


def _refused(world: EcsWorld, client: Client, command: str) -> bytes:
    """Run ``command`` (it must be refused before any ECS exec session) and return stderr."""
    before = len(emulator_sessions(world.url))
    result = client.ssh("alice", command)
    assert result.returncode == 1, result
    assert result.stdout == b""
    assert world.sessions_since(before) == []
    return result.stderr


@pytest.mark.parametrize("which", ["other", "lone", "stopped", "staging", "unknown"])
def test_service_resource_refuses_tasks_outside_its_service(
    world: EcsWorld, alice: Client, ecs_gateway: GatewayProcess, which: str
) -> None:
    task = "0123456789abcdef0123456789abcdef" if which == "unknown" else getattr(world, which)
    before = len(ecs_gateway.events("session.refused", resource="api-svc"))
    stderr = _refused(world, alice, f"formal api-svc --task {task} -- echo here")
    assert stderr == f"sshgate: task {task} is not a running task of api-svc\n".encode()
    refused = ecs_gateway.wait_events("session.refused", before + 1, resource="api-svc")[before]
    assert task in refused["reason"] or which == "unknown"  # the audit log says why


def test_task_option_must_be_a_task_id(world: EcsWorld, alice: Client) -> None:
    stderr = _refused(world, alice, "formal api-svc --task 'x,../../cluster/staging' -- echo here")
    assert stderr == b"sshgate: --task 'x,../../cluster/staging' is not an ECS task id or ARN\n"


def test_service_resource_reaches_the_chosen_task_of_its_service(world: EcsWorld, alice: Client) -> None:
    assert _reached(world, alice, f"formal api-svc --task {world.api[1]} -- echo here") == _target(
        world.api[1], "app"
    )
    assert _reached(world, alice, "formal api-svc -- echo here") == _target(world.api[0], "app")


def test_task_resource_reaches_its_task_only(world: EcsWorld, alice: Client) -> None:
    stderr = _refused(world, alice, f"formal api-task --task {world.api[1]} -- echo here")
    assert stderr == f"sshgate: api-task reaches task {world.api[0]} only\n".encode()
    assert _reached(world, alice, f"formal api-task --task {world.api[0]} -- echo here") == _target(
        world.api[0], "app"
    )
    arn = f"arn:aws:ecs:us-east-1:123456789012:task/prod/{world.api[0]}"
    assert _reached(world, alice, f"formal api-task --task {arn} -- echo here") == _target(
        world.api[0], "app"
    )


def test_container_must_be_one_the_resource_offers(world: EcsWorld, alice: Client) -> None:
    assert _refused(world, alice, "formal api-svc --container sidecar -- echo here") == (
        b"sshgate: api-svc offers container app, not sidecar\n"
    )
    assert _refused(world, alice, "formal lone --container sidecar -- echo here") == (
        b"sshgate: lone offers container app, not sidecar\n"
    )
    assert _refused(world, alice, "formal api-task --container db -- echo here") == (
        b"sshgate: api-task offers container app or sidecar, not db\n"
    )
    assert _reached(world, alice, "formal api-task --container sidecar -- echo here") == _target(
        world.api[0], "sidecar"
    )
    assert _reached(world, alice, "formal api-task -- echo here") == _target(world.api[0], "app")
    assert _reached(world, alice, "formal lone -- echo here") == _target(world.lone, "app")


@pytest.mark.parametrize(
    ("command", "seen"),
    [
        (
            "formal api-svc --task {api1} -- true",
            f"task={{api1}} service={SERVICE_ARN} container=app team={{team1}}",
        ),
        (
            "formal api-task --container sidecar -- true",
            f"task={{api0}} service={SERVICE_ARN} container=sidecar team={{team0}}",
        ),
        ("formal lone -- true", "task={lone} service=none container=app team=none"),
    ],
)
def test_policy_input_describes_the_task_reached(
    world: EcsWorld, john: Client, command: str, seen: str
) -> None:
    team = {t: "payments" if t == world.payments else "none" for t in world.api}
    names = {
        "api0": world.api[0],
        "api1": world.api[1],
        "lone": world.lone,
        "team0": team[world.api[0]],
        "team1": team[world.api[1]],
    }
    result = john.ssh("john", command.format(**names))
    assert result.returncode == 1
    assert result.stderr == f"sshgate: Blocked by policy: saw {seen.format(**names)}\n".encode()


def test_later_channel_cannot_switch_task_or_container(
    world: EcsWorld, alice: Client, tmp_path: Path
) -> None:
    with control_master(alice.ssh_argv, tmp_path / "mux.sock") as mux:
        first = alice.ssh("alice", f"formal api-svc --task {world.api[1]} -- echo here", options=mux)
        assert first.stdout == b"here\n", first.stderr
        task = alice.ssh("alice", f"formal api-svc --task {world.api[0]} -- echo here", options=mux)
        assert (task.returncode, task.stdout) == (1, b"")
        assert (
            task.stderr
            == (
                f"sshgate: this connection reaches task {world.api[1]}; open a new connection for task "
                f"{world.api[0]}\n"
            ).encode()
        )
        container = alice.ssh("alice", "formal api-svc --container sidecar -- echo here", options=mux)
        assert container.stderr == (
            b"sshgate: this connection reaches container app; open a new connection for container sidecar\n"
        )
        same = alice.ssh(
            "alice", f"formal api-svc --task {world.api[1]} --container app -- echo here", options=mux
        )
        assert same.stdout == b"here\n", same.stderr
