"""``sshgate-aws-emulator`` as its own process, as docker-compose runs it, and boto3 clients for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from tests.support.gateway import GatewayProcess

REGION = "us-east-1"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
SERVICES = ("ec2", "ecs", "ssm", "sts")


@contextmanager
def emulated_aws_gateway(
    root: Path,
    config: dict[str, Any],
    url: str,
    services: Iterable[str] = SERVICES,
    policy: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[GatewayProcess]:
    """A gateway in ``root`` whose AWS APIs are the emulator at ``url``, with ``policy`` as its only
    Rego file when given; stopped on leaving."""
    if policy is not None:
        (root / "policy.rego").write_text(policy)
        config["policies"] = {"paths": [str(root / "policy.rego")]}
    config["aws"] = {"region": REGION, "endpoints": {s: url for s in services}}
    gateway = GatewayProcess(root / "gw", config, env={**CREDS, **(env or {})}).start()
    try:
        yield gateway
    finally:
        gateway.stop()


@contextmanager
def emulator_process(*args: str, env: dict[str, str] | None = None, exe: Path | None = None) -> Iterator[str]:
    """Start it (this environment's, or ``exe``) on a free port; yields ``http://127.0.0.1:PORT`` once
    it printed its ready line. ``env`` adds to the environment its shells (the "instances" and
    "containers") inherit."""
    exe = exe or Path(sys.executable).with_name("sshgate-aws-emulator")
    proc = subprocess.Popen(
        [str(exe), "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("ready http://"), line
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def aws_client(url: str, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def emulator_sessions(url: str) -> list[dict[str, Any]]:
    """Every session the emulator has served (``SessionId``, ``Target``, ``Status``, ...)."""
    with urllib.request.urlopen(f"{url}/_emulator/sessions", timeout=5) as response:
        sessions: list[dict[str, Any]] = json.load(response)["Sessions"]
    return sessions


def configure_faults(url: str, **settings: Any) -> None:
    """Flip the emulator's fault switch (``Faults.configure``) from outside its process."""
    body = json.dumps(settings).encode()
    request = urllib.request.Request(f"{url}/_emulator/faults", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.load(response)["ok"]


def create_command_document(url: str) -> None:
    """The NonInteractiveCommands session document EC2 exec needs (``deploy/ssm/``)."""
    aws_client(url, "ssm").create_document(
        Name="SSHGate-NonInteractiveCommands",
        DocumentType="Session",
        DocumentFormat="JSON",
        Content=(Path(__file__).parents[2] / "deploy/ssm/SSHGate-NonInteractiveCommands.json").read_text(),
    )
