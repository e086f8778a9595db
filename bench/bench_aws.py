"""EC2 through SSM (issues 6 and 17): sshgate -> sshgate-aws-emulator -> a shell or TCP server here.

Exec download throughput (NonInteractiveCommands), single-byte PTY echo (p50/p99), and port
forwards, download and upload, 1 and 4 concurrent streams: through `ssh -L` via sshgate, and, with
`--plugin PATH` (or SSM_PLUGIN), through AWS's session-manager-plugin against the same emulator
(AWS-StartPortForwardingSession, mux), in interleaved rounds; medians, with the gateway's CPU per MB
and the gateway's and emulator's CPU per keystroke; with the plugin, its own shell's keystroke
echo in the same rounds too (what a user who runs AWS's plugin instead gets: no SSH leg).
Run as root: .venv/bin/python -m bench.bench_aws [--megabytes 32] [--rounds 5] [--keystrokes 1000]
[--key-gap-ms 2] [--plugin PATH] [--only exec|keys|forward ...] (``--only keys --rounds 3 --keystrokes 1000``: the
keystroke echo alone, about 20 s)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
from tests.support.gateway import Client, GatewayProcess
from tests.support.net import free_port
from tests.support.terminal import Terminal

from bench.common import (
    KEY_GAP_MS,
    bench_env,
    cpu_seconds,
    drain,
    key_echo_us,
    percentiles,
    thread_cpu_seconds,
)

REGION = "us-east-1"
DOCUMENT = Path(__file__).parents[1] / "deploy/ssm/SSHGate-NonInteractiveCommands.json"
BLOCK = os.urandom(1 << 16)
PARTS = ("exec", "keys", "forward")


def serve(handle: Callable[[socket.socket], None]) -> int:
    """A TCP server on loopback that runs ``handle`` for each connection in its own thread."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def run(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # a probe that hangs up early is not an error
            handle(conn)

    def accept() -> None:
        while True:
            threading.Thread(target=run, args=(listener.accept()[0],), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return int(listener.getsockname()[1])


def _announced(conn: socket.socket) -> int:
    """The byte count a bench client sends first (8 bytes, big-endian)."""
    header = b""
    while len(header) < 8 and (data := conn.recv(8 - len(header))):
        header += data
    return int.from_bytes(header, "big")


def source(conn: socket.socket) -> None:
    """Send the announced number of bytes, then close."""
    left = _announced(conn)
    while left:
        left -= conn.send(BLOCK[: min(left, len(BLOCK))])


def sink(conn: socket.socket) -> None:
    """Take the announced number of bytes, then answer one byte (smux has no half-close)."""
    left = _announced(conn)
    while left and (data := conn.recv(min(left, 1 << 16))):
        left -= len(data)
    conn.sendall(b"k")


def wait_listening(port: int, timeout: float = 20.0) -> None:
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


def download(port: int, size: int) -> None:
    got = 0
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(size.to_bytes(8, "big"))
        while data := sock.recv(1 << 16):
            got += len(data)
    if got != size:
        raise SystemExit(f"download returned {got} bytes of {size}")


def upload(port: int, size: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(size.to_bytes(8, "big"))
        left = size
        while left:
            left -= sock.send(BLOCK[: min(left, len(BLOCK))])
        if sock.recv(1) != b"k":
            raise SystemExit("upload was not confirmed")


def transfer(port: int, streams: int, size: int, move: Callable[[int, int], None]) -> float:
    """MB/s of ``streams`` concurrent transfers of ``size`` bytes each through ``port``."""
    threads = [threading.Thread(target=move, args=(port, size)) for _ in range(streams)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return streams * size / (time.perf_counter() - start) / 1e6


@contextlib.contextmanager
def gateway_forward(client: Client, target: int) -> Iterator[int]:
    local = free_port()
    fwd = subprocess.Popen(
        client.ssh_argv("alice+app", options=["-N", "-L", f"127.0.0.1:{local}:localhost:{target}"])
    )
    try:
        wait_listening(local)  # not wait_port: a probe would start, then abandon, a transfer
        yield local
    finally:
        fwd.terminate()
        fwd.wait()


@contextlib.contextmanager
def plugin_forward(plugin: str, url: str, instance: str, target: int) -> Iterator[int]:
    """AWS's plugin as the AWS CLI runs it for AWS-StartPortForwardingSession (ssm-protocol.md §2.4)."""
    local = free_port()
    parameters = {"portNumber": [str(target)], "localPortNumber": [str(local)]}
    request = {"Target": instance, "DocumentName": "AWS-StartPortForwardingSession", "Parameters": parameters}
    ssm = boto3.client("ssm", endpoint_url=url, region_name=REGION)
    response = ssm.start_session(**request)
    response.pop("ResponseMetadata", None)
    argv = [plugin, json.dumps(response), REGION, "StartSession", "", json.dumps(request), url]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        wait_listening(local)
        yield local
    finally:
        proc.terminate()
        proc.wait()


def echo_rtt(term: Terminal, count: int, gap_ms: float) -> list[float]:
    """Round trips of ``count`` single keystrokes, in µs."""
    return [key_echo_us(term, gap_ms) for _ in range(count)]


def echo_terminal(argv: list[str]) -> Terminal:
    """A shell in a raw terminal that echoes every byte through ``cat``, warmed up."""
    term = Terminal(argv)
    term.write("stty raw -echo; echo READY; exec cat\n")
    term.read_until("READY")
    tty.setraw(term.master)
    drain(term)
    echo_rtt(term, 100, 0)
    return term


def plugin_shell_argv(plugin: str, url: str, instance: str) -> list[str]:
    """AWS's plugin as the AWS CLI runs it for a shell (`aws ssm start-session --target`)."""
    request = {"Target": instance}
    response = boto3.client("ssm", endpoint_url=url, region_name=REGION).start_session(**request)
    response.pop("ResponseMetadata", None)
    return [plugin, json.dumps(response), REGION, "StartSession", "", json.dumps(request), url]


def keystrokes(
    client: Client, pids: dict[str, int], count: int, rounds: int, plugin: list[str] | None, gap_ms: float
) -> None:
    """Echo p50 / p99 per round of ``count`` keys (their range, and over all keys), with the CPU
    each process named in ``pids`` spent per keystroke: latency follows the machine's load, CPU
    per key much less. With ``plugin`` (its shell's argv), AWS's plugin against the same emulator
    in the same rounds, alternating: the path without the SSH leg the gateway adds."""
    terms = {"via sshgate": echo_terminal(client.ssh_argv("alice+app", options=["-tt"]))}
    if plugin:
        terms["AWS plugin"] = echo_terminal(plugin)
    rows: dict[str, list[tuple[float, float, dict[str, float]]]] = {name: [] for name in terms}
    every: dict[str, list[float]] = {name: [] for name in terms}
    try:
        for n in range(rounds):
            for name in list(terms) if n % 2 == 0 else list(reversed(terms)):
                watched = dict(pids)
                if name == "AWS plugin":  # the gateway idles then: count the plugin in its place
                    watched = {"emulator": pids["emulator"], "AWS plugin": terms[name].process.pid}
                before = {who: thread_cpu_seconds(pid) for who, pid in watched.items()}
                samples = echo_rtt(terms[name], count, gap_ms)
                cpu = {
                    who: (thread_cpu_seconds(pid) - before[who]) / count * 1e6 for who, pid in watched.items()
                }
                rows[name].append((*percentiles(samples), cpu))
                every[name] += samples
    finally:
        for term in terms.values():
            term.close()
    for name, measured in rows.items():
        p50s, p99s = sorted(r[0] for r in measured), sorted(r[1] for r in measured)
        p50, p99 = percentiles(every[name])
        print(
            f"keystroke echo {name} -> SSM shell, {rounds} x {count} keys {gap_ms:g} ms apart: p50 {p50s[0]:.0f}-{p50s[-1]:.0f} us,"
            f" p99 {p99s[0]:.0f}-{p99s[-1]:.0f} us (all keys: {p50:.0f} / {p99:.0f} us; load {os.getloadavg()[0]:.1f})"
        )
        for who in measured[0][2]:
            cpu_per_key = statistics.median(r[2][who] for r in measured)
            print(f"  {who} CPU per keystroke: {cpu_per_key:.0f} us (median of rounds)")


def exec_download(client: Client, size: int) -> tuple[float, float]:
    """MB/s until the last byte arrives, counted from starting ssh (login, StartSession and the
    data channel's handshake included), and the seconds until the first byte. The command lingers
    after printing: an agent gives a finished command only 2 s to flush its backlog (as AWS's
    does), which would cut the stream."""
    argv = client.ssh_argv("alice+app", f"sh -c 'head -c {size}M /dev/zero; sleep 30'")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    start, got, first = time.perf_counter(), 0, 0.0
    try:
        while got < size << 20 and (chunk := proc.stdout.read1(1 << 20)):
            first = first or time.perf_counter() - start
            got += len(chunk)
        elapsed = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait()
    if got != size << 20:
        raise SystemExit(f"exec returned {got} bytes of {size << 20}")
    return size / elapsed, first


def forwards(
    client: Client, gw: GatewayProcess, plugin: str | None, url: str, instance: str, size: int, rounds: int
) -> None:
    """Port forward throughput, gateway vs plugin, in interleaved rounds; medians."""
    targets = {"down": serve(source), "up": serve(sink)}
    moves = {"down": download, "up": upload}
    results: dict[tuple[str, str, int], list[float]] = {}
    cpu: list[float] = []
    assert gw.process is not None
    for round_ in range(rounds):
        for direction in ("down", "up"):
            for streams in (1, 4):
                ways = ["gateway", "plugin"] if plugin else ["gateway"]
                if round_ % 2:
                    ways.reverse()
                for way in ways:
                    if way == "gateway":
                        forward = gateway_forward(client, targets[direction])
                    else:
                        assert plugin is not None
                        forward = plugin_forward(plugin, url, instance, targets[direction])
                    with forward as local:
                        before = cpu_seconds(gw.process.pid)
                        rate = transfer(local, streams, size // streams, moves[direction])
                        if way == "gateway":
                            cpu.append((cpu_seconds(gw.process.pid) - before) / (size / 1e6) * 1e3)
                    results.setdefault((direction, way, streams), []).append(rate)
    for direction in ("down", "up"):
        for streams in (1, 4):
            via = statistics.median(results[(direction, "gateway", streams)])
            line = (
                f"port forward {direction}, {streams} stream(s), {size >> 20} MB: via sshgate {via:.1f} MB/s"
            )
            if plugin:
                direct = statistics.median(results[(direction, "plugin", streams)])
                line += f", AWS plugin {direct:.1f} MB/s ({via / direct:.2f}x)"
            print(line + f" (medians of {rounds})")
    print(f"gateway CPU per MB of port-forward traffic: {statistics.median(cpu):.1f} ms (median)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=32)
    parser.add_argument("--keystrokes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--key-gap-ms", type=float, default=KEY_GAP_MS, help="pause before each keystroke")
    parser.add_argument(
        "--plugin", default=os.environ.get("SSM_PLUGIN"), help="session-manager-plugin binary"
    )
    parser.add_argument(
        "--only", choices=PARTS, action="append", help="run only this part (repeatable; default: all)"
    )
    args = parser.parse_args()
    parts = set(args.only or PARTS)
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
        reply = clients["ec2"].run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)
        instance = reply["Instances"][0]["InstanceId"]
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
                assert gw.process is not None
                if "exec" in parts:
                    before = cpu_seconds(gw.process.pid)
                    runs = [exec_download(client, size) for _ in range(args.rounds)]
                    cpu = (cpu_seconds(gw.process.pid) - before) / (size * args.rounds) * 1e3
                    rate, first = (statistics.median(r[i] for r in runs) for i in (0, 1))
                    print(
                        f"exec download via sshgate -> SSM: {rate:.1f} MB/s (median of {args.rounds}; first"
                        f" byte after {first * 1e3:.0f} ms; gateway CPU {cpu:.1f} ms per MB, logins included)"
                    )
                if "keys" in parts:
                    pids = {"gateway": gw.process.pid, "emulator": emulator.pid}
                    plugin = plugin_shell_argv(args.plugin, url, instance) if args.plugin else None
                    keystrokes(client, pids, args.keystrokes, args.rounds, plugin, args.key_gap_ms)
                if "forward" in parts:
                    forwards(client, gw, args.plugin, url, instance, size << 20, args.rounds)
            finally:
                gw.stop()
    finally:
        emulator.terminate()
        emulator.wait()


if __name__ == "__main__":
    main()
