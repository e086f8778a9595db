"""EC2 through SSM (issue 6): sshgate -> sshgate-aws-emulator -> a shell on this machine, one run.

Exec download throughput (NonInteractiveCommands), single-byte PTY echo (p50/p99), and a port
forward: one TCP download through `ssh -L` via sshgate vs the same stream through the emulator
driven directly by the SSM client (target: the gateway adds <= 20 %).
Run as root: .venv/bin/python -m bench.bench_aws [--megabytes 32]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path
from typing import Any

import boto3
from tests.support.gateway import Client, GatewayProcess
from tests.support.net import free_port
from tests.support.terminal import Terminal

from bench.common import bench_env
from sshgate.ssm.client import open_port, start_session

REGION = "us-east-1"
DOCUMENT = Path(__file__).parents[1] / "deploy/ssm/SSHGate-NonInteractiveCommands.json"


def source_server(size: int) -> int:
    """A TCP server that sends ``size`` bytes to each client, then closes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    block = os.urandom(1 << 16)

    def send(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # a probe that hangs up early is not an error
            left = size
            while left:
                left -= conn.send(block[: min(left, len(block))])

    def serve() -> None:
        while True:
            threading.Thread(target=send, args=(listener.accept()[0],), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])


def wait_listening(port: int, timeout: float = 10.0) -> None:
    """Wait until something listens on the port, without connecting to it."""
    deadline = time.monotonic() + timeout
    needle = f":{port:04X} "
    while time.monotonic() < deadline:
        if any(
            needle in line and line.split()[3] == "0A"
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        ):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def drain(port: int) -> float:
    start = time.perf_counter()
    got = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        while data := sock.recv(1 << 16):
            got += len(data)
    return got / (time.perf_counter() - start) / 1e6


async def direct_forward(url: str, instance: str, port: int) -> float:
    ssm = boto3.client("ssm", endpoint_url=url, region_name=REGION)
    target = await start_session(ssm, instance, "AWS-StartPortForwardingSession", {"portNumber": [str(port)]})
    session = await open_port(target)
    stream = await session.open_stream()
    start = time.perf_counter()
    got = 0
    while data := await stream.read(1 << 16):
        got += len(data)
    await session.close()
    return got / (time.perf_counter() - start) / 1e6


def echo_rtt(term: Terminal, count: int) -> tuple[float, float]:
    term.write("stty raw -echo; echo READY; exec cat\n")
    term.read_until("READY")
    tty.setraw(term.master)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        os.write(term.master, b"x")
        while not os.read(term.master, 16):
            pass
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return samples[len(samples) // 2], samples[int(0.99 * (len(samples) - 1))]


def exec_download(client: Client, size: int) -> float:
    """MB/s until the last byte arrives. The command lingers after printing: an agent gives a
    finished command only 2 s to flush its backlog (as AWS's does), which would cut the stream."""
    argv = client.ssh_argv("alice+app", f"sh -c 'head -c {size}M /dev/zero; sleep 30'")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    start, got = time.perf_counter(), 0
    try:
        while got < size << 20 and (chunk := proc.stdout.read1(1 << 20)):
            got += len(chunk)
        elapsed = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait()
    if got != size << 20:
        raise SystemExit(f"exec returned {got} bytes of {size << 20}")
    return size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=32)
    parser.add_argument("--keystrokes", type=int, default=300)
    args = parser.parse_args()
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
    )
    emulator = subprocess.Popen(
        [str(Path(sys.executable).with_name("sshgate-aws-emulator"))], stdout=subprocess.PIPE, text=True
    )
    try:
        assert emulator.stdout is not None
        url = emulator.stdout.readline().split()[1]
        clients: dict[str, Any] = {
            s: boto3.client(s, endpoint_url=url, region_name=REGION) for s in ("ec2", "ssm")
        }
        clients["ssm"].create_document(
            Name="SSHGate-NonInteractiveCommands",
            DocumentType="Session",
            DocumentFormat="JSON",
            Content=DOCUMENT.read_text(),
        )
        instance = clients["ec2"].run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)["Instances"][
            0
        ]["InstanceId"]
        with bench_env() as env:
            resource = {
                "name": "app",
                "type": "ec2",
                "instance_id": instance,
                "native_users": [{"username": "ops", "secret": "iam", "default": True}],
            }
            config = env.config(
                resources=[resource],
                aws={"region": REGION, "endpoints": {s: url for s in ("ec2", "ssm", "sts")}},
            )
            gw = GatewayProcess(env.root / "gw", config).start()
            try:
                client = Client(gw, env.keys.alice, env.root / "client")
                size = args.megabytes
                print(f"exec download via sshgate -> SSM: {exec_download(client, size):.1f} MB/s")
                term = Terminal(client.ssh_argv("alice+app", options=["-tt"]))
                try:
                    p50, p99 = echo_rtt(term, args.keystrokes)
                finally:
                    term.close()
                print(f"keystroke echo via sshgate -> SSM shell: p50 {p50:.0f} us, p99 {p99:.0f} us")
                source = source_server(size << 20)
                direct = asyncio.run(direct_forward(url, instance, source))
                local = free_port()
                fwd = subprocess.Popen(
                    client.ssh_argv(
                        "alice+app", options=["-N", "-L", f"127.0.0.1:{local}:localhost:{source}"]
                    )
                )
                try:
                    wait_listening(local)  # not wait_port: a probe would start, then abandon, a download
                    via = drain(local)
                finally:
                    fwd.terminate()
                    fwd.wait()
                print(
                    f"port forward, one {size} MB stream: SSM client direct {direct:.1f} MB/s, via sshgate {via:.1f} MB/s "
                    f"({(1 - via / direct) * 100:+.0f} % slower; target <= 20 %)"
                )
            finally:
                gw.stop()
    finally:
        emulator.terminate()
        emulator.wait()


if __name__ == "__main__":
    main()
