"""The recording tests' moto server (S3 in server mode, as the gateway's boto3 reaches it)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

MOTO = str(Path(sys.executable).parent / "moto_server")


class Moto:
    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOTO, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        self.client().create_bucket(Bucket="recs")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1")

    def objects(self) -> dict[str, bytes]:
        listing = self.client().list_objects_v2(Bucket="recs").get("Contents", [])
        return {
            o["Key"]: self.client().get_object(Bucket="recs", Key=o["Key"])["Body"].read() for o in listing
        }


@contextlib.contextmanager
def moto_server() -> Iterator[Moto]:
    """A started server, and boto3 credentials it accepts in the environment meanwhile."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
            patch.setenv(name, value)
        server = Moto()
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def moto() -> Iterator[Moto]:
    with moto_server() as server:
        yield server
