"""SsmUpstream keeps only the SSM sessions still open: one long-lived connection that runs command after
command must not hold every finished session until it closes."""

from __future__ import annotations

import asyncio

import pytest

from sshgate.aws.clients import AwsClients
from sshgate.aws.targets import Ec2Target
from sshgate.config import Aws as AwsConfig
from sshgate.config import Ec2Resource
from sshgate.policy.input import Ec2Facts
from sshgate.ssm.emulator import Emulator
from sshgate.upstream.base import ExitSignal, SessionRequest
from sshgate.upstream.ssm import SsmUpstream
from tests.ssm.conftest import REGION, Aws


class Collector:
    """The client side of one channel: what arrived, and when the upstream was done."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = asyncio.Event()

    def upstream_data(self, data: bytes, stderr: bool) -> None:
        self.data += data

    def upstream_eof(self) -> None:
        pass

    def upstream_exit(self, status: int | None, signal: ExitSignal | None) -> None:
        pass

    def upstream_closed(self, error: str | None) -> None:
        self.closed.set()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_finished_sessions_are_let_go(
    aws: Aws, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # the gateway's ambient credentials
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    resource = Ec2Resource(
        name="app",
        type="ec2",
        instance_id=aws.instance_id,
        region=REGION,
        native_users=[],
        command_document="AWS-StartNonInteractiveCommand",
    )
    clients = AwsClients(AwsConfig(region=REGION, endpoints={"ssm": emulator.url}))
    facts = Ec2Facts(aws.instance_id, REGION, "123456789012", "running", {})
    upstream = SsmUpstream(clients, resource, Ec2Target(facts), None)
    try:
        for n in range(4):
            client = Collector()
            channel = await upstream.open_session(SessionRequest("exec", command=f"echo run-{n}"), client)
            await asyncio.wait_for(client.closed.wait(), 20)
            channel.close()
            assert client.data.startswith(f"run-{n}\n".encode())
        # The one before the last may still be closing; none of the earlier ones is kept.
        assert len(upstream._sessions) <= 2
    finally:
        await upstream.close()
