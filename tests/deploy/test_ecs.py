"""deploy/ecs checked statically: the task definition against the config schema, and the task
role's IAM policy against every AWS call the code under src/sshgate makes at test time."""

from __future__ import annotations

import ast
import fnmatch
import json
import posixpath
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import asyncssh
import botocore.session
import pytest
from botocore import xform_name

from sshgate.config import Config, Ec2Resource, load_config
from tests.deploy.common import REPO, console_scripts, gateway_env_allowed, metrics_port, secret_env_refs

ECS = REPO / "deploy" / "ecs"
SERVICES = ["ec2", "ecs", "ssm", "sts", "s3", "ec2-instance-connect"]
# S3 operations authorised under another IAM action name.
S3_ACTIONS = {
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadObject": "s3:GetObject",
    "HeadBucket": "s3:ListBucket",
}
# Managed-transfer helpers boto3 adds to the S3 client.
S3_TRANSFER = {"upload_file": "s3:PutObject", "upload_fileobj": "s3:PutObject", "download_file": "s3:GetObject",
               "download_fileobj": "s3:GetObject"}  # fmt: skip
# IAM permissions that are not API operations of their own.
PERMISSION_ONLY = {"s3:ListBucket", "sts:SetSourceIdentity"}
# What a call needs beyond its own action: AssumeRole with SourceIdentity, and boto3's managed
# upload aborting a multipart upload that failed half-way.
ALSO_NEEDS = {"assume_role": {"sts:SetSourceIdentity"}, "upload_file": {"s3:AbortMultipartUpload"}}
# StartSession without DocumentName runs the account's Session Manager shell document.
DEFAULT_SHELL_DOCUMENT = "SSM-SessionManagerRunShell"
DOCS = REPO / "docs" / "aws.md"
# Method names asyncssh also uses (conn.create_session is SSH, not S3 Express's CreateSession).
SSH_METHODS = {name for cls in vars(asyncssh).values() if isinstance(cls, type) for name in dir(cls)}
# The AWS stand-in for tests and the compose playground never runs with the task role.
NOT_GATEWAY = ("ssm/emulator",)


def operation_actions() -> dict[str, set[str]]:
    """snake_case client method → the IAM actions that authorise it (several when names clash)."""
    session = botocore.session.get_session()
    actions: dict[str, set[str]] = {name: {action} for name, action in S3_TRANSFER.items()}
    for service in SERVICES:
        for operation in session.get_service_model(service).operation_names:
            action = (
                S3_ACTIONS.get(operation, f"s3:{operation}") if service == "s3" else f"{service}:{operation}"
            )
            actions.setdefault(xform_name(operation), set()).add(action)
    return actions


OPERATIONS = operation_actions()


def aws_calls(source: str) -> set[str]:
    """Client methods named as ``x.<operation>`` (called, or passed on as ``call(..., x.op)``; not on
    self/cls) or paginated with ``get_paginator("<operation>")``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "get_paginator" and node.args and isinstance(node.args[0], ast.Constant):
                found.add(str(node.args[0].value))
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in OPERATIONS
            and node.attr not in SSH_METHODS
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.add(node.attr)
    return found


def gateway_sources() -> Iterable[Path]:
    for path in sorted((REPO / "src" / "sshgate").rglob("*.py")):
        if not any(part in path.relative_to(REPO / "src" / "sshgate").as_posix() for part in NOT_GATEWAY):
            yield path


def load_json(name: str) -> Any:
    return json.loads((ECS / name).read_text())


def allowed(policy: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(action, resources) for each allowed action."""
    out = []
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        out.extend((action, resources) for action in actions)
    return out


POLICY = load_json("iam-policy.json")
ACTIONS = {action for action, _ in allowed(POLICY)}


def covered(operation: str) -> bool:
    return any(fnmatch.fnmatchcase(a, pattern) for a in OPERATIONS[operation] for pattern in ACTIONS)


def test_scanner_finds_client_calls_and_maps_them() -> None:
    source = (
        "ssm = boto3.client('ssm')\n"
        "ssm.start_session(Target='i-1')\n"
        "self.start_session()\n"
        "ec2.get_paginator('describe_instances').paginate()\n"
        "await s3.upload_part(Bucket='b')\n"
        "self._sts.assume_role(RoleArn='x')\n"
        "await call('looking up', client.describe_tasks, cluster='c')\n"
        "conn.close()\n"
        "conn.create_session(SSHClientSession)\n"
    )
    calls = aws_calls(source)
    assert calls == {"start_session", "describe_instances", "upload_part", "assume_role", "describe_tasks"}
    assert {a for c in calls for a in OPERATIONS[c]} == {
        "ssm:StartSession", "ec2:DescribeInstances", "s3:PutObject", "sts:AssumeRole", "ecs:DescribeTasks"
    }  # fmt: skip
    assert not covered("delete_bucket") and not covered("terminate_instances")


def test_every_aws_call_in_the_code_is_allowed() -> None:
    missing = {
        f"{path.relative_to(REPO)}: {call} needs {' or '.join(sorted(OPERATIONS[call]))}"
        for path in gateway_sources()
        for call in aws_calls(path.read_text())
        if not covered(call)
    }
    assert not missing, "\n".join(sorted(missing))


def test_policy_grants_nothing_the_code_does_not_call() -> None:
    called = {
        action
        for path in gateway_sources()
        for call in aws_calls(path.read_text())
        for action in OPERATIONS[call] | ALSO_NEEDS.get(call, set())
    }
    assert ACTIONS - called == set(), "granted but never called"


def test_session_documents_are_exactly_the_code_s() -> None:
    """ssm:StartSession is scoped to documents: the ones the code names, its configurable default
    command document, and the default shell document (no DocumentName)."""
    named = {
        match for path in gateway_sources() for match in re.findall(r'"(AWS-Start\w+)"', path.read_text())
    }
    named |= {Ec2Resource.model_fields["command_document"].default, DEFAULT_SHELL_DOCUMENT}
    (resources,) = [rs for action, rs in allowed(POLICY) if action == "ssm:StartSession"]
    documents = {r.rsplit("/", 1)[1] for r in resources if ":document/" in r}
    assert documents == named


def test_policy_actions_exist_and_are_explained() -> None:
    session = botocore.session.get_session()
    real = {f"{s}:{op}" for s in SERVICES for op in session.get_service_model(s).operation_names}
    docs = DOCS.read_text()
    for action in ACTIONS:
        assert "*" not in action, f"{action}: wildcard actions are not least privilege"
        assert action in real | PERMISSION_ONLY, f"{action} is not an AWS action"
        assert f"| `{action}` |" in docs, f"docs/aws.md does not explain {action}"
    explained = set(re.findall(r"^\|[^|]*\| `([\w-]+:\w+)` \|", docs, re.M))
    assert explained == ACTIONS, "docs/aws.md explains an action the policy does not grant"


def test_unscoped_resources_only_for_reads() -> None:
    for action, resources in allowed(POLICY):
        if "*" in resources:
            operation = action.split(":")[1]
            assert operation.startswith(("Describe", "List", "GetCallerIdentity")), action


def test_recording_bucket_matches_the_config(config: Config) -> None:
    """Objects only under the prefix; listing only the bucket, and only under the prefix."""
    assert config.recording.s3 is not None
    bucket, prefix = config.recording.s3.bucket, config.recording.s3.prefix
    resources = {r for action, rs in allowed(POLICY) if action.startswith("s3:") and action != "s3:ListBucket"
                 for r in rs}  # fmt: skip
    assert resources == {f"arn:aws:s3:::{bucket}/{prefix}*"}
    (listing,) = [s for s in POLICY["Statement"] if s["Action"] == "s3:ListBucket"]
    assert listing["Resource"] == f"arn:aws:s3:::{bucket}"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": f"{prefix}*"}}


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(ECS / "config.yaml")


TASK = load_json("task-definition.json")
CONTAINERS = {c["name"]: c for c in TASK["containerDefinitions"]}
GATEWAY = CONTAINERS["sshgate"]
HOST_KEY = CONTAINERS["host-key"]


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["containerPath"]: m for m in container.get("mountPoints", [])}


def test_fargate_task_shape() -> None:
    assert TASK["requiresCompatibilities"] == ["FARGATE"] and TASK["networkMode"] == "awsvpc"
    assert GATEWAY["essential"] is True and GATEWAY["command"][0] in console_scripts()
    assert GATEWAY["command"] == ["sshgate", "serve"]
    assert {v["name"] for v in TASK["volumes"]} == {
        m["sourceVolume"] for c in CONTAINERS.values() for m in c.get("mountPoints", [])
    }
    for container in CONTAINERS.values():
        assert container["readonlyRootFilesystem"] is True
        assert container["logConfiguration"]["logDriver"] == "awslogs"
    uid = GATEWAY["user"].split(":")[0]
    assert f"USER {uid}:" in (REPO / "Dockerfile").read_text()


def test_ports_env_and_paths_match_the_config(config: Config) -> None:
    ports = {p["name"]: p["containerPort"] for p in GATEWAY["portMappings"]}
    assert ports == {"ssh": config.listen.port, "metrics": metrics_port(config)}
    env = {e["name"]: e["value"] for e in GATEWAY["environment"]}
    names = set(env) | {s["name"] for s in GATEWAY["secrets"]}
    assert names <= gateway_env_allowed(config), names - gateway_env_allowed(config)
    assert secret_env_refs(config) <= names
    readme = (ECS / "README.md").read_text()
    assert f"COPY config.yaml {env['SSHGATE_CONFIG']}" in readme
    for path in config.policies.paths:
        assert f"COPY policies {path}" in readme
    writable = {p for p, m in mounts(GATEWAY).items() if not m.get("readOnly")}
    assert writable == {config.data_dir, "/tmp"}


def test_host_key_from_a_secret(config: Config) -> None:
    (key_path,) = config.host_keys
    key_dir = posixpath.dirname(key_path)
    assert mounts(GATEWAY)[key_dir]["readOnly"] is True
    assert mounts(HOST_KEY)[key_dir]["sourceVolume"] == mounts(GATEWAY)[key_dir]["sourceVolume"]
    writer = " ".join(HOST_KEY["command"])
    (secret,) = HOST_KEY["secrets"]
    assert f"'{key_path}'" in writer and f"os.environ['{secret['name']}']" in writer
    assert f"os.chown(p, {GATEWAY['user'].replace(':', ', ')})" in writer
    assert GATEWAY["dependsOn"] == [{"containerName": "host-key", "condition": "SUCCESS"}]
    assert HOST_KEY["essential"] is False


def test_execution_role_can_read_every_secret() -> None:
    patterns = {r for _, rs in allowed(load_json("execution-role-policy.json")) for r in rs}
    for container in CONTAINERS.values():
        for secret in container.get("secrets", []):
            assert any(fnmatch.fnmatchcase(secret["valueFrom"] + "-AbCdEf", p) for p in patterns), secret


def test_health_stop_timeout_and_load_balancer(config: Config) -> None:
    probe = " ".join(GATEWAY["healthCheck"]["command"])
    assert f"http://127.0.0.1:{metrics_port(config)}/healthz" in probe
    assert config.shutdown_grace_s < GATEWAY["stopTimeout"] <= 120
    (target,) = load_json("service.json")["loadBalancers"]
    assert target["containerName"] == "sshgate" and target["containerPort"] == config.listen.port
    group = load_json("target-group.json")
    assert group["Port"] == config.listen.port and group["Protocol"] == "TCP"
    assert (group["HealthCheckPath"], int(group["HealthCheckPort"])) == ("/readyz", metrics_port(config))
    assert re.fullmatch(r"\d+", group["Attributes"]["deregistration_delay.timeout_seconds"])


def test_tasks_share_state_from_secrets(config: Config) -> None:
    assert config.state is not None
    secrets = {s["name"]: s["valueFrom"] for s in GATEWAY["secrets"]}
    for ref in (config.state.url, config.state.hmac_key):
        assert ref.startswith("ENV:") and ref.removeprefix("ENV:") in secrets
    readme = (ECS / "README.md").read_text()
    assert "cluster mode disabled" in readme and "rediss://" in readme
    assert "proxy_protocol_v2.enabled" in readme and "trusted_proxies" in readme
