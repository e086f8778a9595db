"""Discovery against the AWS emulator (moto behind it): tagged EC2 instances and the services of an
ECS cluster become resources within `interval_s`, removed ones disappear, a throttled or denied
round keeps the last list, and names that clash or break the grammar are skipped with a warning.
ECS discovery is switched on only by ENABLE_ECS_AUTO_DISCOVERY=true here."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Keys, Upstream, base_config, ssh_resource
from tests.support.emulator import (
    REGION,
    aws_client,
    create_command_document,
    emulated_aws_gateway,
    emulator_process,
)
from tests.support.gateway import Client, GatewayProcess

INTERVAL_S = 1
POLICY = """package formal.v2

import rego.v1

session := {"action": "block", "type": "block_with_formal_message", "message": "secret"} if {
\tinput.resource.tags.env == "secret"
}
"""


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with emulator_process() as url:
        create_command_document(url)
        aws_client(url, "ecs").create_cluster(clusterName="disco")
        yield url


@pytest.fixture(scope="module")
def gw(
    emulator: str, keys: Keys, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = base_config(keys, upstream)
    key = f"FILE:{upstream.sshd.native_key}"
    config["resources"] = [
        ssh_resource("taken", upstream, [{"username": "sgtest", "secret": key, "default": True}])
    ]
    config["discovery"] = {
        "interval_s": INTERVAL_S,
        "ec2": {"enabled": True, "tag_filters": {"sshgate": "true"}},
        "ecs": {"clusters": ["disco"], "container": "app"},
    }
    root = tmp_path_factory.mktemp("discovery-gw")
    with emulated_aws_gateway(
        root, config, emulator, policy=POLICY, env={"ENABLE_ECS_AUTO_DISCOVERY": "true"}
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def alice(gw: GatewayProcess, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(gw, keys.alice, tmp_path_factory.mktemp("alice-discovery"))


def run_instance(url: str, name: str, **tags: str) -> str:
    spec = [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}] + [
        {"Key": k, "Value": v} for k, v in tags.items()
    ]}]  # fmt: skip
    reply = aws_client(url, "ec2").run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, TagSpecifications=spec
    )
    return str(reply["Instances"][0]["InstanceId"])


def listed(alice: Client) -> dict[str, list[str]]:
    """``formal list --detailed`` as name -> the other columns."""
    out = alice.ssh("alice", "formal list --detailed").stdout.decode()
    return {line.split("\t")[0]: line.split("\t")[1:] for line in out.splitlines()}


def wait_for(
    alice: Client, check: Callable[[dict[str, list[str]]], bool], timeout: float = 5 * INTERVAL_S + 10
) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout
    while True:
        now = listed(alice)
        if check(now):
            return now
        assert time.monotonic() < deadline, now
        time.sleep(0.3)


def api_faults(url: str, failing: dict[str, str]) -> None:
    request = urllib.request.Request(
        f"{url}/_emulator/api-faults", data=json.dumps(failing).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.load(response) == {"ok": True}


@pytest.fixture(scope="module")
def base(emulator: str) -> None:
    """What most tests expect listed: a tagged instance, an untagged one, an ECS service."""
    run_instance(emulator, "disco-a", sshgate="true", team="x")
    run_instance(emulator, "plain", team="x")  # not tagged sshgate=true
    ecs = aws_client(emulator, "ecs")
    ecs.register_task_definition(
        family="web", containerDefinitions=[{"name": "app", "image": "busybox", "memory": 64}]
    )
    ecs.create_service(
        cluster="disco",
        serviceName="web",
        taskDefinition="web",
        desiredCount=0,
        tags=[{"key": "team", "value": "y"}],
    )


@pytest.mark.usefixtures("base")
def test_tagged_instances_and_ecs_services_appear_and_are_usable(
    emulator: str, alice: Client, gw: GatewayProcess
) -> None:
    started = time.monotonic()
    run_instance(emulator, "disco-new", sshgate="true")
    now = wait_for(alice, lambda found: {"disco-a", "disco-web", "disco-new"} <= found.keys())
    assert time.monotonic() - started < 3 * INTERVAL_S + 5  # within the interval, not at some later reload
    assert now["disco-a"] == ["ec2", "iam", "running", REGION, "Name=disco-a,sshgate=true,team=x"]
    assert now["disco-web"] == ["ecs", "iam", "-", REGION, "team=y"]
    assert "plain" not in now
    shell = alice.ssh("alice+disco-a", "echo discovered")  # ambient IAM: no native_users configured
    assert (shell.stdout, shell.returncode) == (b"discovered\n", 0), shell.stderr
    assert gw.wait_event("session.start", resource="disco-a")["native_user_source"] == "ambient"
    config = alice.ssh("alice", "formal ssh-config").stdout.decode()
    assert "Host sshgate-disco-a\n  User alice+disco-a\n" in config
    assert "Host sshgate-disco-web\n  User alice+disco-web\n" in config


def test_policies_see_discovered_tags(emulator: str, alice: Client) -> None:
    run_instance(emulator, "disco-secret", sshgate="true", env="secret")
    run_instance(emulator, "disco-open", sshgate="true", env="open")
    wait_for(alice, lambda found: "disco-open" in found)
    assert "disco-secret" not in listed(alice)
    refused = alice.ssh("alice+disco-secret", "true")
    assert refused.stderr == b"sshgate: Blocked by policy: secret\n"


def test_removed_ones_disappear(emulator: str, alice: Client) -> None:
    instance = run_instance(emulator, "disco-gone", sshgate="true")
    ecs = aws_client(emulator, "ecs")
    ecs.register_task_definition(
        family="tmp", containerDefinitions=[{"name": "app", "image": "busybox", "memory": 64}]
    )
    ecs.create_service(cluster="disco", serviceName="tmp", taskDefinition="tmp", desiredCount=0)
    wait_for(alice, lambda found: {"disco-gone", "disco-tmp"} <= found.keys())
    aws_client(emulator, "ec2").terminate_instances(InstanceIds=[instance])
    ecs.delete_service(cluster="disco", service="tmp")
    wait_for(alice, lambda found: not {"disco-gone", "disco-tmp"} & found.keys())


@pytest.mark.usefixtures("base")
@pytest.mark.parametrize(
    ("action", "kind"), [("ec2:DescribeInstances", "throttle"), ("ecs:ListServices", "deny")]
)
def test_a_failing_round_keeps_the_last_list(
    emulator: str, alice: Client, gw: GatewayProcess, action: str, kind: str
) -> None:
    before = wait_for(alice, lambda found: "disco-a" in found and "disco-web" in found)
    api_faults(emulator, {action: kind})
    try:
        fresh = run_instance(emulator, f"disco-{kind}", sshgate="true")
        source = "ec2" if action.startswith("ec2") else "ecs:disco"
        error = gw.wait_event("discovery.error", timeout=20, source=source)
        assert error["kept"] and ("throttling" in error["error"] or "access denied" in error["error"])
        time.sleep(3 * INTERVAL_S)
        now = listed(alice)
        kept = [name for name in before if name.startswith("disco-")]
        assert set(kept) <= now.keys()
        if source == "ec2":
            assert f"disco-{kind}" not in now
    finally:
        api_faults(emulator, {})
    wait_for(alice, lambda found: f"disco-{kind}" in found)
    aws_client(emulator, "ec2").terminate_instances(InstanceIds=[fresh])
    wait_for(alice, lambda found: f"disco-{kind}" not in found)


def test_clashing_shared_and_invalid_names(emulator: str, alice: Client, gw: GatewayProcess) -> None:
    run_instance(emulator, "taken", sshgate="true")
    twins = sorted(run_instance(emulator, "disco-twin", sshgate="true") for _ in range(2))
    run_instance(emulator, "bad name", sshgate="true")
    now = wait_for(alice, lambda found: set(twins) <= found.keys())
    assert now["taken"][0] == "ssh"  # the configured resource keeps its name
    assert "disco-twin" not in now and "bad name" not in now
    # Each is warned about once, by the round that first saw it (maybe after the listing above).
    deadline = time.monotonic() + 10
    wanted = {"taken": "configured", "bad name": "not a valid resource name", "disco-twin": "shared"}
    while True:
        skipped = {e["name"]: e["reason"] for e in gw.events("discovery.skipped")}
        if wanted.keys() <= skipped.keys() or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for name, why in wanted.items():
        assert why in skipped[name], (name, skipped)


@pytest.mark.usefixtures("base")
def test_sighup_reload_keeps_discovering(emulator: str, alice: Client, gw: GatewayProcess) -> None:
    original: dict[str, Any] = json.loads(json.dumps(gw.config))
    gw.config["discovery"]["ec2"]["tag_filters"] = {"sshgate": "reloaded"}
    gw.write_config(gw.config)
    try:
        gw.signal(signal.SIGHUP)
        gw.wait_event("config.reload", result="ok")
        run_instance(emulator, "disco-reloaded", sshgate="reloaded")
        now = wait_for(alice, lambda found: "disco-reloaded" in found and "disco-a" not in found)
        assert "disco-web" in now  # ECS (still on) kept going through the reload
        gw.config["discovery"]["ec2"]["enabled"] = False
        gw.write_config(gw.config)
        gw.signal(signal.SIGHUP)
        now = wait_for(alice, lambda found: "disco-reloaded" not in found)  # switched off: gone
        assert "disco-web" in now
    finally:
        gw.write_config(original)
        gw.config = original
        gw.signal(signal.SIGHUP)
    wait_for(alice, lambda found: "disco-a" in found and "disco-reloaded" not in found)
