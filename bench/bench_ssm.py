"""SSM data-channel benchmark: prints numbers, not a pytest test.

    .venv/bin/python bench/bench_ssm.py [--megabytes 32]

1. Codec: encode + decode of 1 KiB ``output_stream_data`` messages per second (one core).
2. Mux port forwarding through client ↔ emulator on loopback, 1 stream and 8 streams, upload and
   download: the emulator runs as its own process (``sshgate-aws-emulator``, as in docker-compose),
   the client in this one, the TCP sink/source in a third, so each side has a core as in production.
Targets (issue 5): codec ≥ 100,000 msg/s; ≥ 10 MB/s for 1 stream and for 8 streams in total.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3

from sshgate.ssm.client import PortSession, open_port
from sshgate.ssm.codec import ClientMessage, MessageType, PayloadType, decode, encode
from sshgate.ssm.control import SsmControl

SINK = r"""
import asyncio, sys
async def handle(reader, writer):
    mode, size = (await reader.readline()).split()
    size = int(size)
    if mode == b"up":
        got = 0
        while got < size:
            data = await reader.read(1 << 16)
            if not data:
                break
            got += len(data)
        writer.write(b"%d\n" % got)
    else:
        block = b"x" * (1 << 16)
        while size > 0:
            writer.write(block[:size]); size -= len(block)
            await writer.drain()
    await writer.drain()
    await reader.read()
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def bench_codec(count: int = 200_000) -> tuple[float, float]:
    payload = os.urandom(1024)
    message = ClientMessage(MessageType.OUTPUT_STREAM_DATA, 1, PayloadType.OUTPUT, payload)
    start = time.perf_counter()
    for _ in range(count):
        decode(encode(message))
    codec_only = count / (time.perf_counter() - start)
    start = time.perf_counter()
    for seq in range(count):
        decode(encode(ClientMessage(MessageType.OUTPUT_STREAM_DATA, seq, PayloadType.OUTPUT, payload)))
    with_build = count / (time.perf_counter() - start)
    return codec_only, with_build


async def transfer(port_session: PortSession, streams: int, total: int, mode: str) -> float:
    each = total // streams

    async def one() -> None:
        stream = await port_session.open_stream()
        await stream.write(f"{mode} {each}\n".encode())
        if mode == "up":
            block = b"y" * 65536
            for pos in range(0, each, len(block)):
                await stream.write(block[: each - pos])
            reply = b""
            while not reply.endswith(b"\n"):
                reply += await stream.read()
            assert int(reply) == each, reply
        else:
            got = 0
            while got < each:
                chunk = await stream.read(1 << 16)
                assert chunk
                got += len(chunk)
        await stream.close()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(streams)))
    return each * streams / (time.perf_counter() - start) / 1e6


async def bench_mux(megabytes: int) -> None:
    exe = Path(sys.executable).with_name("sshgate-aws-emulator")
    emulator = subprocess.Popen([str(exe)], stdout=subprocess.PIPE, text=True)
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    try:
        assert emulator.stdout is not None and sink.stdout is not None
        url = emulator.stdout.readline().split()[1]
        sink_port = sink.stdout.readline().strip()
        creds = {"region_name": "us-east-1", "aws_access_key_id": "k", "aws_secret_access_key": "s"}
        ec2 = boto3.client("ec2", endpoint_url=url, **creds)
        ssm = boto3.client("ssm", endpoint_url=url, **creds)
        instance = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)["Instances"][0]
        control = SsmControl(ssm)
        target = await control.start_session(
            instance["InstanceId"], "AWS-StartPortForwardingSession", {"portNumber": [sink_port]}
        )
        session = await open_port(target, control=control)
        total = megabytes * 1_000_000
        for streams in (1, 8):
            for mode in ("up", "down"):
                rate = await transfer(session, streams, total, mode)
                print(f"mux {streams} stream(s) {mode:>4}: {rate:6.1f} MB/s total ({megabytes} MB)")
        await session.close()
    finally:
        for proc in (emulator, sink):
            proc.terminate()
            proc.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=32, help="data per measurement")
    args = parser.parse_args()
    codec_only, with_build = bench_codec()
    print(
        f"codec encode+decode, 1 KiB payload: {codec_only:,.0f} msg/s ({with_build:,.0f} msg/s incl. building)"
    )
    try:
        import uvloop
    except ImportError:
        asyncio.run(bench_mux(args.megabytes))
    else:
        uvloop.run(bench_mux(args.megabytes))


if __name__ == "__main__":
    main()
