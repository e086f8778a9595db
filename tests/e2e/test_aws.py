"""EC2 and ECS resources through SSM: real ssh -> sshgate -> sshgate-aws-emulator (moto behind it)
-> a real shell on this machine. The emulator runs as its own process, as docker-compose runs it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.e2e.test_forward import ssh_background
from tests.support.emulator import (
    REGION,
    SERVICES,
    aws_client,
    configure_faults,
    create_command_document,
    emulated_aws_gateway,
    emulator_process,
    emulator_sessions,
)
from tests.support.gateway import Client, GatewayProcess, asyncssh_login
from tests.support.net import free_port, wait_port
from tests.support.sshd import keygen
from tests.support.tcp import echo_server, recv_exact, socks5_connect
from tests.support.terminal import Terminal
from tests.support.vscode import remote_ssh_flow

ROLE_ARN = "arn:aws:iam::123456789012:role/ecs-exec"

POLICY = """package formal.v2

import rego.v1

# EC2 tag rule: prod instances need the oncall group. ECS rule: the ops group stays out of the
# app container of tasks tagged team=payments.
session := {"action": "block", "type": "block_with_formal_message", "message": "prod needs oncall"} if {
\tinput.ec2.tags.env == "prod"
\tnot "oncall" in input.user.groups
}

session := {"action": "block", "type": "block_with_formal_message", "message": "ops stays out of payments/app"} if {
\tinput.ecs.container_name == "app"
\tinput.ecs.task_tags.team == "payments"
\t"ops" in input.user.groups
}

# start_if_stopped: the policy sees the state as found, before anything is started.
session := {"action": "block", "type": "block_with_formal_message", "message": "guarded is started by its owner"} if {
\tinput.resource.name == "guarded"
\tinput.ec2.state == "stopped"
}
"""


@dataclass
class AwsWorld:
    url: str
    ec2: Any
    ecs: Any
    instance_id: str
    task_id: str
    fleet: list[str]  # two running instances named "fleet", the second launched later

    def sessions(self) -> list[dict[str, Any]]:
        return emulator_sessions(self.url)

    def live_sessions(self) -> list[dict[str, Any]]:
        return [s for s in self.sessions() if s.get("Status") != "Terminated"]

    def instance_named(self, name: str) -> dict[str, Any]:
        found = self.ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": [name]}])
        (instance,) = [i for r in found["Reservations"] for i in r["Instances"]]
        return dict(instance)


@pytest.fixture(scope="module")
def world() -> Iterator[AwsWorld]:
    with emulator_process() as url:
        ec2, ecs = aws_client(url, "ec2"), aws_client(url, "ecs")
        create_command_document(url)
        tags = [
            {
                "ResourceType": "instance",
                "Tags": [{"Key": "Name", "Value": "app-prod"}, {"Key": "env", "Value": "prod"}],
            }
        ]
        instance = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, TagSpecifications=tags)
        for _ in range(2):
            ec2.run_instances(
                ImageId="ami-12345678",
                MinCount=1,
                MaxCount=1,
                TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "twin"}]}],
            )

        def named(name: str) -> str:
            tags = [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}]
            reply = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, TagSpecifications=tags)
            return str(reply["Instances"][0]["InstanceId"])

        for name in ("asleep", "sleeper", "guarded", "slowpoke"):
            ec2.stop_instances(InstanceIds=[named(name)])
        fleet = [named("fleet")]
        time.sleep(1.1)  # LaunchTime has second resolution: the second one is the newest
        fleet.append(named("fleet"))
        ecs.create_cluster(clusterName="prod")
        ecs.register_task_definition(
            family="api",
            containerDefinitions=[
                {"name": "app", "image": "busybox", "memory": 128},
            ],
        )
        task = ecs.run_task(
            cluster="prod",
            taskDefinition="api",
            launchType="FARGATE",
            enableExecuteCommand=True,
            tags=[{"key": "team", "value": "payments"}],
        )
        yield AwsWorld(
            url,
            ec2,
            ecs,
            instance["Instances"][0]["InstanceId"],
            task["tasks"][0]["taskArn"].rsplit("/", 1)[-1],
            fleet,
        )


@pytest.fixture(scope="module")
def aws_gateway(
    world: AwsWorld, keys: Keys, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = base_config(keys, upstream)
    iam = [{"username": "ops", "secret": "iam", "default": True}]
    config["identities"]["users"][0]["groups"] = ["dev", "oncall"]
    config["resources"] = [
        {
            "name": "app-prod",
            "type": "ec2",
            "instance_name": "app-prod",
            "region": REGION,
            "native_users": iam,
        },
        {"name": "app-id", "type": "ec2", "instance_id": world.instance_id, "native_users": iam},
        {"name": "twin", "type": "ec2", "instance_name": "twin", "native_users": iam},
        {"name": "asleep", "type": "ec2", "instance_name": "asleep", "native_users": iam},
        {"name": "nameless", "type": "ec2", "instance_name": "no-such-name", "native_users": iam},
        {"name": "sleeper", "type": "ec2", "instance_name": "sleeper", "start_if_stopped": True},
        {"name": "guarded", "type": "ec2", "instance_name": "guarded", "start_if_stopped": True},
        {
            "name": "slowpoke",
            "type": "ec2",
            "instance_name": "slowpoke",
            "start_if_stopped": True,
            "start_timeout_s": 1,  # the emulator takes 1 s to boot and 1 s more for the agent
        },
        {"name": "fleet", "type": "ec2", "instance_name": "fleet"},
        {"name": "fleet-newest", "type": "ec2", "instance_name": "fleet", "select": "newest"},
        {"name": "fleet-any", "type": "ec2", "instance_name": "fleet", "select": "any"},
        {"name": "app-ambient", "type": "ec2", "instance_name": "app-prod"},
        {"name": "api-ambient", "type": "ecs", "cluster": "prod", "task": world.task_id, "container": "app"},
        {
            "name": "api",
            "type": "ecs",
            "cluster": "prod",
            "task": world.task_id,
            "container": "app",
            "native_users": [{"username": "exec", "secret": ROLE_ARN, "default": True}],
        },
    ]
    config["resources"].append(
        {
            "name": "app-ssh",
            "type": "ec2",
            "instance_name": "app-prod",
            "ssh": {
                "user": "sgtest",
                "port": upstream.sshd.port,
                "host_key_policy": {"host_keys": [upstream.sshd.host_pub]},
            },
            "native_users": [
                {"username": "sgtest", "secret": f"FILE:{upstream.sshd.native_key}", "default": True}
            ],
        }
    )
    config["resources"].append(
        {
            "name": "app-eic",
            "type": "ec2",
            "instance_name": "app-prod",
            "ssh": {
                "user": "sgtest",
                "port": upstream.sshd.port,
                "instance_connect": True,
                "host_key_policy": {"host_keys": [upstream.sshd.host_pub]},
            },
            "native_users": [{"username": "sgtest", "secret": "iam", "default": True}],
        }
    )
    config["resources"].append(
        {
            "name": "sshd-eic",
            "type": "ssh",
            "hostname": "127.0.0.1",
            "port": upstream.sshd.port,
            "host_key_policy": {"host_keys": [upstream.sshd.host_pub]},
            "ssh": {"instance_connect": True, "instance_id": world.instance_id},
            "native_users": [{"username": "sgtest", "secret": "iam", "default": True}],
        }
    )
    services = (*SERVICES, "ec2-instance-connect")
    with emulated_aws_gateway(tmp_path_factory.mktemp("aws-gw"), config, world.url, services, POLICY) as gw:
        yield gw


@pytest.fixture(scope="module")
def instance_connect(world: AwsWorld, upstream: Upstream) -> Iterator[None]:
    """The test sshd plays instance app-prod: it also accepts the keys pushed to it (and live)."""
    url_file = upstream.sshd.instance_connect_url_file
    metadata = f"{world.url}/_emulator/instances/{world.instance_id}/latest/meta-data"
    url_file.write_text(f"{metadata}/managed-ssh-keys/active-keys")
    yield
    url_file.unlink()


@pytest.fixture(scope="module")
def alice_aws(aws_gateway: GatewayProcess, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Client:
    return Client(aws_gateway, keys.alice, tmp_path_factory.mktemp("alice-aws"))


def wait_agent_size(world: AwsWorld, cols: int, rows: int) -> None:
    """Wait until a live session's agent got this terminal size (the emulator lists them)."""
    deadline = time.monotonic() + 10
    while not any(
        s["TerminalSizes"][-1][:2] == [cols, rows] for s in world.live_sessions() if s["TerminalSizes"]
    ):
        assert time.monotonic() < deadline, f"no agent got the size {cols}x{rows}"
        time.sleep(0.02)


@pytest.mark.parametrize("resource", ["app-prod", "app-id"])
def test_ec2_pty_shell(alice_aws: Client, world: AwsWorld, resource: str) -> None:
    term = Terminal(alice_aws.ssh_argv(f"alice+{resource}", options=["-tt"]), rows=30, cols=100)
    try:
        term.write("PS1='ssm> '; echo via-$((6*7))\n")
        term.read_until("via-42")
        term.write("stty size\n")
        term.read_until(r"30 100")
        term.resize(40, 120)
        # OpenSSH itself may send input typed right after a SIGWINCH ahead of the window change
        # (both land in one turn of its loop, and it flushes input before checking the size):
        # type only once the resize has crossed the gateway. The gateway's own ordering is
        # test_window_changes_and_input_reach_the_agent_in_order's.
        wait_agent_size(world, 120, 40)
        term.write("stty size\n")
        term.read_until(r"40 120")
        term.write("exit\n")
        assert term.wait(timeout=15) == 0
    finally:
        term.close()


class _Collect(asyncssh.SSHClientSession[bytes]):
    """A client session that keeps what it received, to wait for markers in it."""

    def __init__(self) -> None:
        self.text = ""
        self._changed = asyncio.Event()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.text += data.decode(errors="replace")
        self._changed.set()

    async def wait_for(self, marker: str, timeout: float = 20.0) -> str:
        """Everything up to and including ``marker`` (consumed)."""
        async with asyncio.timeout(timeout):
            while marker not in self.text:
                self._changed.clear()
                await self._changed.wait()
        end = self.text.index(marker) + len(marker)
        seen, self.text = self.text[:end], self.text[end:]
        return seen


async def test_window_changes_and_input_reach_the_agent_in_order(
    aws_gateway: GatewayProcess, keys: Keys, world: AwsWorld
) -> None:
    """Window changes and input sent back to back, ten times over, reach the agent in the order
    sent: the emulator's agent notes how much input it had taken when each size arrived."""
    conn = await asyncssh_login(aws_gateway, keys.alice, "alice+app-prod")
    async with conn:
        chan, session = await conn.create_session(
            _Collect, term_type="xterm", term_size=(100, 30), encoding=None
        )
        first = b"stty -echo; echo $((6*7))-ready\n"
        chan.write(first)
        await session.wait_for("42-ready")
        sizes = [(81 + i, 21 + i) for i in range(10)]
        for cols, rows in sizes:
            chan.change_terminal_size(cols, rows)
            chan.write(b"true\n")
        chan.write(b"echo $((6*8))-done\n")
        await session.wait_for("48-done")
        (agent,) = [s for s in world.live_sessions() if s["TerminalSizes"][:1] == [[100, 30, 0]]]
        expected = [[cols, rows, len(first) + 5 * i] for i, (cols, rows) in enumerate(sizes)]
        assert agent["TerminalSizes"][1:] == expected
        chan.close()


def test_ec2_exec_keeps_stdout_stderr_and_status_apart(alice_aws: Client) -> None:
    result = alice_aws.ssh("alice", "formal app-prod -- sh -c 'echo out; echo err >&2; exit 4'")
    assert (result.stdout, result.stderr, result.returncode) == (b"out\n", b"err\n", 4)


def test_ec2_exec_without_stdin_says_so_and_ignores_control_bytes(alice_aws: Client) -> None:
    """NonInteractiveCommands has no stdin, and its agent reads 0x03 in input as SIGINT: piped
    data must neither vanish silently nor interrupt the command."""
    result = alice_aws.ssh("alice+app-prod", "sh -c 'sleep 1; cat; echo done'", input=b"binary\x03data\x1c")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"done\n"
    assert result.stderr == (
        b"sshgate: app-prod runs commands through SSM without stdin; the input was not delivered "
        b"(give the resource an ssh: section for scp, rsync and commands that read stdin)\n"
    )


def test_ec2_exec_ended_without_its_exit_status_is_reported(alice_aws: Client, world: AwsWorld) -> None:
    """A session that closes before the command's exit status (terminated in the console, or an
    agent whose 2 s flush ran out) may have lost output too: the client hears so, not just 255."""
    live_before = {s["SessionId"] for s in world.live_sessions()}
    proc = subprocess.Popen(
        alice_aws.ssh_argv("alice+app-prod", "sh -c 'echo started; sleep 30'"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
    (session,) = [s["SessionId"] for s in world.live_sessions() if s["SessionId"] not in live_before]
    aws_client(world.url, "ssm").terminate_session(SessionId=session)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (255, b"")
    assert err == (
        b"sshgate: the SSM session on app-prod closed before the command's exit status arrived; "
        b"its output may be incomplete\n"
    )


def test_ecs_exec_exit_status_and_shell_option(alice_aws: Client, aws_gateway: GatewayProcess) -> None:
    result = alice_aws.ssh("alice", "formal api -- sh -c 'echo from-task; exit 7'")
    assert result.stdout == b"from-task\n", result.stderr
    assert result.returncode == 7
    shell = "\"/bin/bash -c 'exec env MARK=cursor /bin/bash'\""
    term = Terminal(alice_aws.ssh_argv("alice", "-tt", f"formal api --shell {shell}"))
    try:
        term.write("echo mark=$MARK\n")
        term.read_until("mark=cursor")
        term.write("exit\n")
        term.wait(timeout=15)
    finally:
        term.close()
    connect = aws_gateway.wait_event("upstream.connect", resource="api", result="ok")
    assert connect["upstream"] == "ssm"


def test_ecs_exec_carries_stdin_to_eof(alice_aws: Client) -> None:
    """ECS Exec offers only a pty; an exec command still gets its stdin byte for byte, and EOF."""
    blob = os.urandom(1 << 20)
    result = alice_aws.ssh("alice+api", "sha256sum; echo status-after-eof", input=blob, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{hashlib.sha256(blob).hexdigest()}  -\nstatus-after-eof\n".encode()


def test_ec2_local_forward_ten_connections_one_session(alice_aws: Client, world: AwsWorld) -> None:
    before = {s["SessionId"] for s in world.live_sessions()}
    with echo_server() as target:
        local = free_port()
        proc = subprocess.Popen(
            alice_aws.ssh_argv(
                "alice+app-prod", options=["-N", "-L", f"127.0.0.1:{local}:localhost:{target}"]
            )
        )
        try:
            wait_port(local)
            results: list[bytes] = []

            def roundtrip(i: int) -> None:
                with socket.create_connection(("127.0.0.1", local), timeout=20) as sock:
                    payload = bytes([i]) * 100_000
                    sock.sendall(payload)
                    results.append(recv_exact(sock, len(payload)))

            threads = [threading.Thread(target=roundtrip, args=(i,)) for i in range(10)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert sorted(r[0] for r in results) == list(range(10))
            opened = [s for s in world.live_sessions() if s["SessionId"] not in before]
            assert len(opened) == 1, opened
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_policy_input_from_ec2_tags_and_ecs_container(
    aws_gateway: GatewayProcess, keys: Keys, tmp_path: Path
) -> None:
    john = Client(aws_gateway, keys.john, tmp_path)
    assert john.ssh("john+app-prod", "true").stderr == b"sshgate: Blocked by policy: prod needs oncall\n"
    ecs = john.ssh("john", "formal api -- true")
    assert ecs.stderr == b"sshgate: Blocked by policy: ops stays out of payments/app\n"


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ("nameless", b"no EC2 instance found for the instance named no-such-name"),
        ("twin", b"the instance named twin matches 2 running instances (i-"),
        ("asleep", b"is stopped, not running"),
    ],
)
def test_ec2_lookup_errors(alice_aws: Client, resource: str, message: bytes) -> None:
    result = alice_aws.ssh(f"alice+{resource}", "true")
    assert result.returncode == 1
    assert message in result.stderr, result.stderr


def test_no_orphaned_ssm_sessions(alice_aws: Client, world: AwsWorld) -> None:
    assert alice_aws.ssh("alice", "formal api -- true").returncode == 0
    deadline = time.monotonic() + 10
    while world.live_sessions() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert world.live_sessions() == []


def test_ec2_full_ssh_through_ssm_carries_50mb_of_stdin(alice_aws: Client) -> None:
    blob = os.urandom(50 * 1024 * 1024)
    result = alice_aws.ssh("alice+app-ssh", "sha256sum", input=blob, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0].decode() == hashlib.sha256(blob).hexdigest()


@pytest.mark.parametrize("resource", ["app-ssh", "app-prod"])
def test_ec2_vscode_flow_through_ssm(alice_aws: Client, resource: str) -> None:
    """With ``ssh:`` bash runs under the instance's sshd; without, in a piped shell over an SSM pty."""
    remote_ssh_flow(lambda options: alice_aws.ssh_argv(f"alice+{resource}", "bash", options=options))


@pytest.mark.parametrize("resource", ["app-prod", "api"])
def test_ptyless_shell_is_byte_clean_with_eof_and_status(alice_aws: Client, resource: str) -> None:
    """EC2 without ``ssh:`` and ECS: every byte value both ways, no echo or CR, stdin EOF ends cat,
    then bash's exit status."""
    blob = bytes(range(256)) * 64
    result = alice_aws.ssh(f"alice+{resource}", "bash", input=b"cat; exit 5\n" + blob, options=["-T"])
    assert result.stdout == blob, result.stderr
    assert result.returncode == 5


@pytest.mark.parametrize("resource", ["app-prod", "api"])
def test_ptyless_login_shell_reads_stdin(alice_aws: Client, resource: str) -> None:
    result = alice_aws.ssh(
        f"alice+{resource}", input=b"[ -t 0 ] || echo $((6*7)) piped\nexit 3\n", options=["-T"]
    )
    assert (result.stdout, result.returncode) == (b"42 piped\n", 3), result.stderr


@pytest.mark.usefixtures("instance_connect")
@pytest.mark.parametrize("resource", ["app-eic", "sshd-eic"])
def test_instance_connect_login_with_the_pushed_key(alice_aws: Client, resource: str) -> None:
    """An ``iam`` native user has no key: the only way into the sshd is the one the gateway pushed
    (EC2 with ``ssh:`` through SSM, and an ssh resource with ``ssh.instance_id``)."""
    result = alice_aws.ssh(f"alice+{resource}", "id -un")
    assert (result.stdout, result.returncode) == (b"sgtest\n", 0), result.stderr


@pytest.mark.usefixtures("instance_connect")
def test_sshd_takes_only_live_keys_pushed_for_that_user(
    world: AwsWorld, upstream: Upstream, tmp_path: Path
) -> None:
    key = keygen(tmp_path / "eic", "eic")
    argv = [
        *("ssh", "-F", "/dev/null", "-i", str(key), "-p", str(upstream.sshd.port)),
        *("-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"),
        *("-o", "UserKnownHostsFile=/dev/null", "sgtest@127.0.0.1", "true"),
    ]
    eic = aws_client(world.url, "ec2-instance-connect")

    def push(user: str) -> None:
        public = Path(f"{key}.pub").read_text()
        eic.send_ssh_public_key(InstanceId=world.instance_id, InstanceOSUser=user, SSHPublicKey=public)

    assert subprocess.run(argv, capture_output=True, timeout=30).returncode == 255  # never pushed
    push("sgro")
    assert subprocess.run(argv, capture_output=True, timeout=30).returncode == 255  # pushed for another
    push("sgtest")
    login = subprocess.run(argv, capture_output=True, timeout=30)
    assert login.returncode == 0, login.stderr


def test_role_arn_assumed_with_source_identity(alice_aws: Client, world: AwsWorld) -> None:
    assert alice_aws.ssh("alice", "formal api -- echo as-role").stdout == b"as-role\n"
    with urllib.request.urlopen(f"{world.url}/_emulator/assume-role-calls", timeout=5) as response:
        calls = json.load(response)["Calls"]
    assert {
        "RoleArn": ROLE_ARN,
        "RoleSessionName": "sshgate-alice@corp.com",
        "SourceIdentity": "alice@corp.com",
    } in calls


def test_a_closed_forward_ends_its_port_session_even_when_the_agent_ignores_the_flag(
    alice_aws: Client, world: AwsWorld
) -> None:
    """The TerminateSession flag, then the TerminateSession API (as the AWS CLI calls it after the
    plugin): an agent that ignores the flag must not keep a session to the target open."""
    configure_faults(world.url, ignore_terminate_flag=True)
    before = {s["SessionId"] for s in world.live_sessions()}
    try:
        with echo_server() as target:
            local = free_port()
            argv = alice_aws.ssh_argv("alice+app-prod", options=["-N", "-L", f"127.0.0.1:{local}:localhost:{target}"])
            proc = subprocess.Popen(argv)
            try:
                wait_port(local)
                with socket.create_connection(("127.0.0.1", local), timeout=20) as sock:
                    sock.sendall(b"ping")
                    assert recv_exact(sock, 4) == b"ping"
                assert [s for s in world.live_sessions() if s["SessionId"] not in before]
            finally:
                proc.terminate()
                proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while [s for s in world.live_sessions() if s["SessionId"] not in before]:
            assert time.monotonic() < deadline, "the port session is still running"
            time.sleep(0.1)
    finally:
        configure_faults(world.url, ignore_terminate_flag=False)


def test_an_agent_sending_what_is_not_smux_has_its_port_session_ended(
    alice_aws: Client, world: AwsWorld, aws_gateway: GatewayProcess
) -> None:
    """A mux port session whose agent sends frames smux cannot read breaks the protocol: the
    forward closes with the reason, and the SSM session is ended, not left for later forwards."""
    configure_faults(world.url, tamper="output", tamper_payload="garbage, not smux")
    before = {s["SessionId"] for s in world.live_sessions()}
    try:
        with echo_server() as target:
            local = free_port()
            argv = alice_aws.ssh_argv("alice+app-prod", options=["-N", "-L", f"127.0.0.1:{local}:localhost:{target}"])
            proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
            try:
                wait_port(local)
                with socket.create_connection(("127.0.0.1", local), timeout=20) as sock:
                    sock.sendall(b"ping")
                    sock.settimeout(10)
                    assert sock.recv(10) == b""
                closed = aws_gateway.wait_event("channel.close", kind="forward", port=target)
                assert "smux" in closed["upstream_error"]
                deadline = time.monotonic() + 10
                while [s for s in world.live_sessions() if s["SessionId"] not in before]:
                    assert time.monotonic() < deadline, "the port session is still running"
                    time.sleep(0.1)
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    finally:
        configure_faults(world.url, tamper=None, tamper_payload="")


def test_forward_to_closed_port_on_instance(alice_aws: Client) -> None:
    socks = free_port()
    with ssh_background(alice_aws, "alice+app-prod", ["-N", "-D", f"127.0.0.1:{socks}"]):
        wait_port(socks)
        with pytest.raises((OSError, EOFError)), socks5_connect(socks, "localhost", free_port()) as sock:
            sock.sendall(b"x")
            assert sock.recv(1) == b""
            raise EOFError("closed")


def test_websocket_dropped_mid_session_resumes(alice_aws: Client, world: AwsWorld) -> None:
    """The emulator aborts every live data-channel websocket mid-stream; output still arrives whole."""
    proc = subprocess.Popen(
        alice_aws.ssh_argv(
            "alice", "formal api -- sh -c 'for i in $(seq 1 40); do echo line-$i; sleep 0.05; done'"
        ),
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first == b"line-1\n"
    request = urllib.request.Request(f"{world.url}/_emulator/drop", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.load(response)["dropped"] >= 1
    rest, _ = proc.communicate(timeout=60)
    assert (first + rest).decode().split() == [f"line-{i}" for i in range(1, 41)]
    assert proc.returncode == 0


def test_ecs_port_forward_into_task(alice_aws: Client) -> None:
    with echo_server() as target:
        local = free_port()
        with ssh_background(alice_aws, "alice+api", ["-N", "-L", f"127.0.0.1:{local}:localhost:{target}"]):
            wait_port(local)
            with socket.create_connection(("127.0.0.1", local), timeout=20) as sock:
                sock.sendall(b"into the task")
                assert recv_exact(sock, 13) == b"into the task"


def test_ec2_command_with_terminal_is_interactive(alice_aws: Client) -> None:
    term = Terminal(
        alice_aws.ssh_argv("alice", "-tt", "formal app-prod -- sh -c 'echo ready; read -r x; echo got-$x'")
    )
    try:
        term.read_until("ready")
        term.write("typed\n")
        term.read_until("got-typed")
        assert term.wait(timeout=15) == 0
    finally:
        term.close()


def test_abandoned_forward_does_not_stall_the_next(alice_aws: Client) -> None:
    """A client that hangs up mid-download must not wedge the shared port session (regression)."""
    size = 8 << 20
    block = os.urandom(1 << 16)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def send(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            left = size
            while left:
                left -= conn.send(block[: min(left, len(block))])

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                threading.Thread(target=send, args=(listener.accept()[0],), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    local = free_port()
    target = listener.getsockname()[1]
    try:
        with ssh_background(
            alice_aws, "alice+app-prod", ["-N", "-L", f"127.0.0.1:{local}:localhost:{target}"]
        ):
            wait_port(local)  # this probe starts a download and hangs up at once
            with socket.create_connection(("127.0.0.1", local), timeout=30) as sock:
                assert len(recv_exact(sock, 1 << 20)) == 1 << 20
                sock.shutdown(socket.SHUT_RDWR)  # and a second abandoned download
            with socket.create_connection(("127.0.0.1", local), timeout=30) as sock:
                # Regressions: this read stalled; then it got nothing, the agent's smux stream
                # torn by a cancelled writer of an abandoned stream.
                assert len(recv_exact(sock, size)) == size
    finally:
        listener.close()


def test_stopped_instance_is_started_and_the_client_reads_the_progress(
    alice_aws: Client, world: AwsWorld
) -> None:
    instance = world.instance_named("sleeper")["InstanceId"]
    result = alice_aws.ssh("alice+sleeper", input=b"echo $((6*7)); exit\n", options=["-T"], timeout=90)
    assert (result.stdout, result.returncode) == (b"42\n", 0), result.stderr
    assert result.stderr == (
        f"sshgate: starting sleeper ({instance})\n"
        "sshgate: waiting for the SSM agent…\n"
        "sshgate: sleeper is running\n".encode()
    )
    assert world.instance_named("sleeper")["State"]["Name"] == "running"


def test_policy_refuses_before_anything_is_started(alice_aws: Client, world: AwsWorld) -> None:
    result = alice_aws.ssh("alice+guarded", "true")
    assert result.stderr == b"sshgate: Blocked by policy: guarded is started by its owner\n"
    assert result.returncode == 1
    time.sleep(1.5)  # a start would show as pending (then running) by now
    assert world.instance_named("guarded")["State"]["Name"] == "stopped"


def test_start_gives_up_after_start_timeout_s(alice_aws: Client, world: AwsWorld) -> None:
    instance = world.instance_named("slowpoke")["InstanceId"]
    result = alice_aws.ssh("alice+slowpoke", "true")
    assert result.returncode == 1
    assert result.stderr.startswith(f"sshgate: starting slowpoke ({instance})\n".encode())
    last = result.stderr.splitlines()[-1]  # still pending, or its agent not yet online: load decides
    assert last.startswith(b"sshgate: slowpoke did not become reachable within 1 s ("), result.stderr


def _landed_on(alice_aws: Client, world: AwsWorld, resource: str) -> str:
    before = {s["SessionId"] for s in world.sessions()}
    result = alice_aws.ssh("alice", f"formal {resource} -- true")
    assert result.returncode == 0, result.stderr
    (target,) = [s["Target"] for s in world.sessions() if s["SessionId"] not in before]
    return str(target)


def test_several_instances_behind_one_name(alice_aws: Client, world: AwsWorld) -> None:
    refused = alice_aws.ssh("alice+fleet", "true")
    ids = ", ".join(sorted(world.fleet))
    assert (
        refused.stderr
        == (
            f"sshgate: the instance named fleet matches 2 running instances ({ids}); "
            "name exactly one, or set select: newest or any\n"
        ).encode()
    )
    assert _landed_on(alice_aws, world, "fleet-newest") == world.fleet[1]
    assert {_landed_on(alice_aws, world, "fleet-any") for _ in range(4)} <= set(world.fleet)


def test_ambient_iam_without_native_users(
    alice_aws: Client, aws_gateway: GatewayProcess, world: AwsWorld
) -> None:
    listed = alice_aws.ssh("alice", "formal list").stdout.decode()
    assert "app-ambient\tec2\tiam\n" in listed and "api-ambient\tecs\tiam\n" in listed
    roles_before = len(_assume_role_calls(world))
    for login, command in (
        ("alice+app-ambient", "echo on-ec2"),
        ("alice", "formal api-ambient -- echo on-ecs"),
    ):
        result = alice_aws.ssh(login, command)
        assert (result.returncode, result.stdout) == (0, command.split()[-1].encode() + b"\n"), result.stderr
    for resource in ("app-ambient", "api-ambient"):
        start = aws_gateway.wait_event("session.start", resource=resource)
        assert (start["native_user"], start["native_user_source"]) == ("iam", "ambient")
    assert len(_assume_role_calls(world)) == roles_before  # the gateway's own credentials


def _assume_role_calls(world: AwsWorld) -> list[dict[str, str]]:
    with urllib.request.urlopen(f"{world.url}/_emulator/assume-role-calls", timeout=5) as response:
        calls: list[dict[str, str]] = json.load(response)["Calls"]
    return calls


@pytest.mark.parametrize("alias", ["sshgate-app-prod", "sshgate-api"])
def test_vscode_flow_through_the_generated_config(
    alice_aws: Client, keys: Keys, tmp_path: Path, alias: str
) -> None:
    generated = alice_aws.ssh("alice", "formal ssh-config --vscode")
    assert generated.returncode == 0, generated.stderr
    config = tmp_path / "sshgate_config"
    config.write_bytes(generated.stdout)
    known_hosts = tmp_path / "sshgate_known_hosts"
    known_hosts.write_text(
        "".join(re.findall(r"^# sshgate_known_hosts: (.*\n)", generated.stdout.decode(), re.M))
    )
    options = ["-F", str(config), "-o", f"UserKnownHostsFile={known_hosts}", "-i", str(keys.alice)]
    options += ["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
    remote_ssh_flow(lambda more: ["ssh", *options, *more, alias, "bash"])


async def test_clients_gone_while_ssh_through_ssm_is_set_up_leave_no_session_running(
    aws_gateway: GatewayProcess, keys: Keys, world: AwsWorld
) -> None:
    """A +resource login to an ec2 resource with ssh: starts an AWS-StartSSHSession port session
    right after authentication; a client that leaves while it is set up leaves none running."""
    for delay_ms in range(0, 400, 40):
        conn = await asyncssh_login(aws_gateway, keys.alice, "alice+app-ssh")
        await asyncio.sleep(delay_ms / 1000)
        conn.abort()
    deadline = time.monotonic() + 15
    while world.live_sessions() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert world.live_sessions() == []


async def test_channels_closed_while_their_ssm_session_starts_leave_none_open(
    aws_gateway: GatewayProcess, keys: Keys, world: AwsWorld
) -> None:
    """Session channels closed at every moment of their SSM session's start (StartSession, the
    websocket, the handshake) leave no SSM session running, and the connection keeps serving."""
    conn = await asyncssh_login(aws_gateway, keys.alice, "alice+app-prod")
    async with conn:
        for delay_ms in range(0, 200, 10):
            process = await conn.create_process("sleep 30")
            await asyncio.sleep(delay_ms / 1000)
            process.close()
            await process.wait_closed()
        result = await asyncio.wait_for(conn.run("echo still-serving", check=True), 30)
        assert result.stdout == "still-serving\n"
    deadline = time.monotonic() + 15
    while world.live_sessions() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert world.live_sessions() == []
