"""Fixtures for the SSM tests: one in-process emulator (with moto behind it) for the whole run,
boto3 clients pointed at it, an EC2 instance to target, and local TCP servers to forward to."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from sshgate.ssm.client import StreamTarget
from sshgate.ssm.control import SsmControl
from sshgate.ssm.emulator import Emulator
from tests.support.emulator import aws_client as _client
from tests.support.emulator import emulator_process as start_emulator_process

REGION = "us-east-1"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator() as emu:
        yield emu


@dataclass
class EmulatorProcess:
    """``sshgate-aws-emulator`` as a separate process (its own core, like docker-compose runs it)."""

    url: str
    instance_id: str
    ssm: Any

    @property
    def control(self) -> SsmControl:
        return SsmControl(self.ssm)


@pytest.fixture(scope="session")
def emulator_process() -> Iterator[EmulatorProcess]:
    with start_emulator_process() as url:
        clients = {s: _client(url, s) for s in ("ec2", "ssm")}
        reply = clients["ec2"].run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)
        yield EmulatorProcess(url, reply["Instances"][0]["InstanceId"], clients["ssm"])


@pytest.fixture(autouse=True)
def _clean_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fault settings and agent version never leak from one test into the next."""
    yield
    if "emulator" in request.fixturenames:
        emu: Emulator = request.getfixturevalue("emulator")
        emu.faults.reset()
        emu.kms_key_id = None


def aws_client(emulator: Emulator, service: str) -> Any:
    return _client(emulator.url, service)


@dataclass
class Aws:
    ssm: Any
    ec2: Any
    ecs: Any
    instance_id: str

    @property
    def control(self) -> SsmControl:
        return SsmControl(self.ssm, self.ecs)

    async def start(
        self, document: str | None = None, parameters: dict[str, list[str]] | None = None
    ) -> StreamTarget:
        return await self.control.start_session(self.instance_id, document, parameters)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def aws(emulator: Emulator) -> Aws:
    ec2 = aws_client(emulator, "ec2")
    reply = await asyncio.to_thread(ec2.run_instances, ImageId="ami-12345678", MinCount=1, MaxCount=1)
    return Aws(
        aws_client(emulator, "ssm"), ec2, aws_client(emulator, "ecs"), reply["Instances"][0]["InstanceId"]
    )


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class TcpServer:
    server: asyncio.Server
    connections: int = 0

    @property
    def port(self) -> int:
        port: int = self.server.sockets[0].getsockname()[1]
        return port


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _hash_sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads '<up> <down>\n' and ``up`` bytes, answers with their SHA-256, then sends ``down``
    pseudo-random bytes followed by their SHA-256, so both directions are checked."""
    try:
        up, down = (int(x) for x in (await reader.readline()).split())
        digest = hashlib.sha256()
        while up:
            data = await reader.read(min(up, 65536))
            if not data:
                return
            digest.update(data)
            up -= len(data)
        writer.write(digest.hexdigest().encode() + b"\n")
        back = hashlib.sha256()
        block = os.urandom(65536)
        while down:
            piece = block[:down]
            back.update(piece)
            writer.write(piece)
            down -= len(piece)
            await writer.drain()
        writer.write(back.hexdigest().encode() + b"\n")
        await writer.drain()
        await reader.read()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _serve(handler: Handler) -> AsyncIterator[TcpServer]:
    holder: list[TcpServer] = []

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        holder[0].connections += 1
        await handler(reader, writer)

    server = await asyncio.start_server(counted, "127.0.0.1", 0)
    holder.append(TcpServer(server))
    try:
        yield holder[0]
    finally:
        server.close()
        await server.wait_closed()


@pytest_asyncio.fixture(loop_scope="session")
async def echo_server() -> AsyncIterator[TcpServer]:
    async for server in _serve(_echo):
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def hash_server() -> AsyncIterator[TcpServer]:
    async for server in _serve(_hash_sink):
        yield server


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening (bound then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
