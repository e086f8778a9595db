"""The policy input of docs/policy.md for the request stage and the ec2/ecs sections."""

from sshgate.config import HostKeyPolicy, NativeUser, SshResource
from sshgate.identity import Identity
from sshgate.native_users import NativeChoice
from sshgate.policy.input import (
    ConnectionFacts,
    Ec2Facts,
    EcsFacts,
    RequestFacts,
    ec2_input,
    ecs_input,
    identity_key,
    request_input,
    session_input,
)

ALICE = Identity("human", "alice@corp.com", "formal", "alice", ("dev",))
WEB = SshResource(
    type="ssh",
    name="web-1",
    hostname="10.0.0.5",
    tags={"env": "prod"},
    host_key_policy=HostKeyPolicy(insecure_accept_any=True),
    native_users=[NativeUser(username="ubuntu", secret="pw", default=True)],
)


SFTP = RequestFacts("subsystem", subsystem="sftp")


def _session(request: RequestFacts | None = SFTP) -> dict[str, object]:
    return session_input(
        ALICE,
        NativeChoice(WEB.native_users[0], "default"),
        WEB,
        ConnectionFacts("203.0.113.7", "SSH-2.0-OpenSSH_9.2", "publickey"),
        request,
        now=1790000000.5,
    )


def test_a_session_decided_before_any_request_has_no_request_facts() -> None:
    # A +resource login is decided at authentication (DESIGN §6): request, command, subsystem and
    # pty are absent (undefined in Rego), not a made-up shell without a terminal.
    assert _session(None)["connection"] == {
        "client_ip": "203.0.113.7", "client_version": "SSH-2.0-OpenSSH_9.2", "auth_method": "publickey"
    }  # fmt: skip
    assert _session()["connection"] == {
        "client_ip": "203.0.113.7", "client_version": "SSH-2.0-OpenSSH_9.2", "auth_method": "publickey",
        "request": "subsystem", "subsystem": "sftp", "pty": False,
    }  # fmt: skip


def test_request_input_adds_the_request_and_keeps_the_session() -> None:
    session = _session()
    doc = request_input(session, "sftp", operation="rename", path="/a", target_path="/b")
    assert doc["stage"] == "request"
    assert doc["request"] == {"kind": "sftp", "operation": "rename", "path": "/a", "target_path": "/b"}
    assert {k: v for k, v in doc.items() if k not in ("stage", "request")} == {
        k: v for k, v in session.items() if k != "stage"
    }
    assert session["stage"] == "session" and "request" not in session


def test_request_input_port_forward() -> None:
    doc = request_input(_session(), "port_forward", host="db.internal", port=5432)
    assert doc["request"] == {"kind": "port_forward", "host": "db.internal", "port": 5432}


def test_ec2_section_names_the_instance_arn() -> None:
    doc = ec2_input(Ec2Facts("i-0abc", "eu-west-1", "123456789012", "running", {"env": "prod"}))
    assert doc == {
        "instance_id": "i-0abc",
        "instance_arn": "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc",
        "region": "eu-west-1",
        "account_id": "123456789012",
        "state": "running",
        "tags": {"env": "prod"},
    }


def test_ec2_arn_partitions() -> None:
    china = ec2_input(Ec2Facts("i-1", "cn-north-1", "1", "running", {}))
    gov = ec2_input(Ec2Facts("i-1", "us-gov-west-1", "1", "running", {}))
    assert china["instance_arn"].startswith("arn:aws-cn:ec2:cn-north-1:")
    assert gov["instance_arn"].startswith("arn:aws-us-gov:ec2:")


def test_ecs_section() -> None:
    cluster, task = "arn:aws:ecs:eu-west-1:1:cluster/main", "arn:aws:ecs:eu-west-1:1:task/main/0123abcd"
    with_service = ecs_input(EcsFacts(cluster, task, "app", "arn:aws:ecs:eu-west-1:1:service/main/web"))
    standalone = ecs_input(EcsFacts(cluster, task, "app", task_tags={"t": "1"}))
    assert with_service["task_id"] == "0123abcd"
    assert with_service["service_arn"].endswith("service/main/web")
    assert "service_arn" not in standalone and standalone["task_tags"] == {"t": "1"}


def test_identity_key_names_who_the_input_is_about() -> None:
    bot = Identity("machine", "ci-bot", "formal", "ci-bot", ())
    assert identity_key(_session()) == "human:alice@corp.com"
    assert identity_key(request_input(_session(), "exec", command="ls")) == "human:alice@corp.com"
    assert identity_key({"user": bot.as_policy_input()}) == "machine:ci-bot"
    assert identity_key({}) is None and identity_key({"user": "alice"}) is None
