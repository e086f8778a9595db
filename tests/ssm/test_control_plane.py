"""The AWS calls the gateway makes, through boto3, against the emulator's single endpoint."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncssh
import boto3
import pytest
from botocore.exceptions import ClientError

from sshgate.aws.errors import AwsError
from sshgate.ssm.client import SessionKindError, SsmSessionError, StreamTarget, open_command, open_shell
from sshgate.ssm.control import SsmControl
from sshgate.ssm.emulator import Emulator
from tests.ssm.conftest import REGION, Aws, aws_client
from tests.ssm.test_sessions import read_all, read_until


async def test_start_session_returns_a_usable_session(aws: Aws, emulator: Emulator) -> None:
    reply = await asyncio.to_thread(aws.ssm.start_session, Target=aws.instance_id)
    assert reply["SessionId"].startswith("emulator-")
    assert reply["StreamUrl"].startswith(
        f"ws://127.0.0.1:{emulator.port}/v1/data-channel/{reply['SessionId']}?"
    )
    assert reply["TokenValue"]
    shell = await open_shell(StreamTarget.from_response(reply), control=aws.control)
    await shell.write(b"echo usable; exit\n")
    assert b"usable" in await read_all(shell)
    active = await asyncio.to_thread(aws.ssm.describe_sessions, State="History")
    assert reply["SessionId"] in {s["SessionId"] for s in active["Sessions"]}


async def test_start_session_errors(aws: Aws) -> None:
    with pytest.raises(ClientError) as unknown:
        await asyncio.to_thread(aws.ssm.start_session, Target="i-0123456789abcdef0")
    assert unknown.value.response["Error"]["Code"] == "TargetNotConnected"
    with pytest.raises(ClientError) as bad_doc:
        await asyncio.to_thread(aws.ssm.start_session, Target=aws.instance_id, DocumentName="No-Such-Doc")
    assert bad_doc.value.response["Error"]["Code"] == "InvalidDocument"
    with pytest.raises(ClientError) as gone:
        await asyncio.to_thread(aws.ssm.resume_session, SessionId="emulator-nope")
    assert gone.value.response["Error"]["Code"] == "DoesNotExistException"


async def test_wrong_token_is_refused(aws: Aws) -> None:
    target = await aws.start()
    forged = StreamTarget(target.session_id, target.stream_url, "not-the-token")
    with pytest.raises(SsmSessionError, match="code 1008: invalid token"):
        await open_shell(forged, timeout=5)


async def test_describe_instances_passes_through_to_moto(aws: Aws) -> None:
    reply = await asyncio.to_thread(aws.ec2.describe_instances, InstanceIds=[aws.instance_id])
    assert reply["Reservations"][0]["Instances"][0]["InstanceId"] == aws.instance_id
    info = await asyncio.to_thread(aws.ssm.describe_instance_information)
    online = {i["InstanceId"]: i["PingStatus"] for i in info["InstanceInformationList"]}
    assert online[aws.instance_id] == "Online"


async def test_ecs_execute_command(aws: Aws) -> None:
    ecs = aws.ecs
    await asyncio.to_thread(ecs.create_cluster, clusterName="demo")
    await asyncio.to_thread(
        ecs.register_task_definition,
        family="app",
        containerDefinitions=[{"name": "app", "image": "busybox", "memory": 128}],
    )
    run = await asyncio.to_thread(ecs.run_task, cluster="demo", taskDefinition="app", launchType="FARGATE")
    task_arn = run["tasks"][0]["taskArn"]
    task_id = task_arn.rsplit("/", 1)[-1]
    described = await asyncio.to_thread(ecs.describe_tasks, cluster="demo", tasks=[task_arn])
    container = described["tasks"][0]["containers"][0]
    assert container["runtimeId"].startswith(task_id + "-")
    assert container["managedAgents"][0]["name"] == "ExecuteCommandAgent"
    assert described["tasks"][0]["enableExecuteCommand"] is True

    reply = await asyncio.to_thread(
        ecs.execute_command,
        cluster="demo",
        task=task_arn,
        container="app",
        command="echo from-ecs",
        interactive=True,
    )
    assert reply["containerName"] == "app" and reply["session"]["streamUrl"].startswith("ws://")
    target = await aws.control.execute_command("demo", task_id, "printf ecs-%s ok", container="app")
    shell = await open_shell(target, control=aws.control)
    assert b"ecs-ok" in await read_all(shell)  # exec'd directly, no sh -c (container mode)

    # StartSession to the container's target string works too (port forwarding into tasks).
    ecs_target = f"ecs:demo_{task_id}_{container['runtimeId']}"
    started = await asyncio.to_thread(aws.ssm.start_session, Target=ecs_target)
    assert started["SessionId"]
    with pytest.raises(ClientError):
        await asyncio.to_thread(
            ecs.execute_command, cluster="demo", task=task_arn, command="sh", interactive=False
        )


def test_emulator_command_prints_ready_and_stops_on_sigterm(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("sshgate-aws-emulator")
    proc = subprocess.Popen(
        [str(exe), "--host", "127.0.0.1", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("ready http://127.0.0.1:")
        url = line.split()[1]
        ec2 = boto3.client(
            "ec2", endpoint_url=url, region_name=REGION, aws_access_key_id="k", aws_secret_access_key="s"
        )
        assert ec2.describe_instances()["Reservations"] == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_admin_endpoints_for_outside_tools(aws: Aws, emulator: Emulator) -> None:
    import aiohttp

    target = await aws.start()
    shell = await open_shell(target, control=aws.control)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{emulator.url}/_emulator/sessions") as reply:
            listed = {s["SessionId"]: s for s in (await reply.json())["Sessions"]}
        assert listed[target.session_id]["Connected"] is True
        async with http.post(f"{emulator.url}/_emulator/faults", json={"drop_rate": 0.5}) as reply:
            assert reply.status == 200 and emulator.faults.drop_rate == 0.5
        async with http.post(f"{emulator.url}/_emulator/faults", json={"nonsense": 1}) as reply:
            assert reply.status == 400
        emulator.faults.reset()
        async with http.post(
            f"{emulator.url}/_emulator/drop", params={"session_id": target.session_id}
        ) as reply:
            assert (await reply.json())["dropped"] == 1
    await shell.write(b"echo still-here\n")
    await read_until(shell, rb"still-here")
    await shell.close()


async def test_instance_connect_keys_live_sixty_seconds_per_user(
    aws: Aws, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SendSSHPublicKey, which moto only acknowledges: checked, kept per user, served, expired."""
    clock = [1000.0]
    monkeypatch.setattr(emulator.instance_connect, "clock", lambda: clock[0])
    eic = aws_client(emulator, "ec2-instance-connect")
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    url = f"{emulator.url}/_emulator/instances/{aws.instance_id}/latest/meta-data/managed-ssh-keys"

    async def active(user: str) -> str:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/active-keys/{user}/") as reply:
            return await reply.text()

    async def push(**fields: str) -> str:
        args = {"InstanceId": aws.instance_id, "InstanceOSUser": "ec2-user", "SSHPublicKey": key, **fields}
        try:
            reply = await asyncio.to_thread(eic.send_ssh_public_key, **args)
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])
        assert reply["Success"] is True and reply["RequestId"]
        return "ok"

    assert await push() == "ok"
    assert await active("ec2-user") == key + "\n"
    assert await active("root") == ""
    clock[0] += 59
    assert await active("ec2-user") == key + "\n"
    clock[0] += 2
    assert await active("ec2-user") == ""
    dsa = f"ssh-dss {key.split()[1]} a-long-enough-comment"
    assert await push(SSHPublicKey=dsa) == "InvalidArgsException"
    assert await push(InstanceOSUser="bad user") == "InvalidArgsException"
    assert await push(InstanceId="i-0123456789abcdef0") == "EC2InstanceNotFoundException"


async def test_started_instance_boots_then_its_agent_comes_online(aws: Aws, emulator: Emulator) -> None:
    """StartInstances: pending for boot_delay, then running, and only agent_delay later does SSM
    list it and reach it, as an agent registering after boot."""
    ec2, ssm = aws.ec2, aws.ssm
    reply = await asyncio.to_thread(ec2.run_instances, ImageId="ami-12345678", MinCount=1, MaxCount=1)
    instance = reply["Instances"][0]["InstanceId"]
    await asyncio.to_thread(ec2.stop_instances, InstanceIds=[instance])

    async def state() -> str:
        found = await asyncio.to_thread(ec2.describe_instances, InstanceIds=[instance])
        return str(found["Reservations"][0]["Instances"][0]["State"]["Name"])

    async def online() -> bool:
        info = await asyncio.to_thread(
            ssm.describe_instance_information, Filters=[{"Key": "InstanceIds", "Values": [instance]}]
        )
        return [i["PingStatus"] for i in info["InstanceInformationList"]] == ["Online"]

    assert (await state(), await online()) == ("stopped", False)
    started = await asyncio.to_thread(ec2.start_instances, InstanceIds=[instance])
    assert started["StartingInstances"][0]["CurrentState"]["Name"] == "pending"
    assert (await state(), await online()) == ("pending", False)
    with pytest.raises(ClientError) as early:
        await asyncio.to_thread(ssm.start_session, Target=instance)
    assert early.value.response["Error"]["Code"] == "TargetNotConnected"
    await asyncio.sleep(emulator.boots.boot_delay + 0.2)
    assert (await state(), await online()) == ("running", False)
    await asyncio.sleep(emulator.boots.agent_delay)
    assert await online()
    reply = await asyncio.to_thread(ssm.start_session, Target=instance)
    await asyncio.to_thread(ssm.terminate_session, SessionId=reply["SessionId"])
    running = await asyncio.to_thread(ec2.start_instances, InstanceIds=[instance])
    assert running["StartingInstances"][0]["PreviousState"]["Name"] == "running"
    assert await online()  # starting a running instance changes nothing


async def test_api_faults_answer_in_each_services_error_format(aws: Aws, emulator: Emulator) -> None:
    emulator.api_faults.configure({"ec2:DescribeInstances": "throttle", "ecs:ListClusters": "deny"})
    try:
        with pytest.raises(ClientError) as throttled:
            await asyncio.to_thread(aws.ec2.describe_instances)
        assert throttled.value.response["Error"]["Code"] == "RequestLimitExceeded"
        assert throttled.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        with pytest.raises(ClientError) as denied:
            await asyncio.to_thread(aws.ecs.list_clusters)
        assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
        assert "not authorized to perform: ecs:ListClusters" in denied.value.response["Error"]["Message"]
        await asyncio.to_thread(aws.ssm.describe_instance_information)  # other actions still answer
    finally:
        emulator.api_faults.configure({})
    await asyncio.to_thread(aws.ec2.describe_instances)
    with pytest.raises(ValueError, match="throttle"):
        emulator.api_faults.configure({"ec2:DescribeInstances": "explode"})


async def test_ssm_control_turns_aws_failures_into_readable_errors(aws: Aws, emulator: Emulator) -> None:
    """The one control-plane API (gateway, tests, benches): boto errors leave it as AwsError lines."""
    control = SsmControl(aws.ssm, subject="web-7")
    with pytest.raises(AwsError, match=r"SSM agent is not connected \(starting an SSM session on web-7\)"):
        await control.start_session("i-0123456789abcdef0")
    with pytest.raises(AwsError, match="resuming SSM session emulator-nope") as gone:
        await control.resume("emulator-nope")
    assert gone.value.code == "DoesNotExistException"
    with pytest.raises(ValueError, match="without an ECS client"):
        await control.execute_command("demo", "task", "sh")
    started = await control.start_session(aws.instance_id, reason="audit says why")
    session = emulator.session(started.session_id)
    assert session.spec.reason == "audit says why" and session.status == "Connecting"
    await control.terminate(started.session_id)
    assert session.status == "Terminated"


async def test_opening_the_wrong_session_kind_fails_and_ends_it(aws: Aws, emulator: Emulator) -> None:
    """A document of another kind than the caller expects (a port session where a command was asked)."""
    target = await aws.start("AWS-StartPortForwardingSession", {"portNumber": ["9"]})
    with pytest.raises(
        SessionKindError, match="the document opened a Port session, not NonInteractiveCommands"
    ):
        await open_command(target, control=aws.control)
    await asyncio.wait_for(emulator.session(target.session_id).ended.wait(), 10)
