"""Recording benchmark (issue 4), recorder alone: how fast a cast channel turns terminal output
into an asciicast file, the CPU that costs in the gateway's process (what the relay's event loop
competes with) and in the writer process, and the recording size per MB of output.

The gateway comparison (exec and scp throughput with recording on vs off) is
bench_recording_gateway. Run: .venv/bin/python -m bench.bench_recording [--size-mb 256]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import tempfile
import time
from pathlib import Path

from sshgate.gateway.relay import RECORDING_HIGH_WATER
from sshgate.recording.local import FileRecorder

CHUNK = 32768
STREAMS = {
    "yes": b"y\n" * (CHUNK // 2),
    "base64 text": base64.encodebytes(os.urandom(CHUNK))[:CHUNK],
    "ls --color": (b"drwxr-xr-x 2 root root 4096 Jan  1 \x1b[01;34mbin\x1b[0m\r\n" * 700)[:CHUNK],
}


async def one(name: str, chunk: bytes, size_mb: int, root: Path) -> None:
    recorder = FileRecorder(root / name.replace(" ", "-"))
    session = await recorder.start_session("bench", {"user": {"name": "bench"}})
    chan = session.open_channel("exec", {"command": "bench", "pty": False})
    count = size_mb * 2**20 // len(chunk)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    writer0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for i in range(count):
        chan.output(chunk)
        if i % 64 == 0:
            await asyncio.sleep(0)  # let the writer run, as the relay's loop does
        while chan.backlog() > RECORDING_HIGH_WATER:  # and wait for it as the relay does
            await asyncio.sleep(0.001)
    chan.close(0)
    await session.close()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await recorder.aclose()  # reaps the writer process: its CPU is in RUSAGE_CHILDREN from here
    writer1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    writer = writer1.ru_utime + writer1.ru_stime - writer0.ru_utime - writer0.ru_stime
    (cast,) = root.glob(f"{name.replace(' ', '-')}/*/bench/1-exec.cast")
    total = count * len(chunk) / 2**20
    print(
        f"{name:<12} {total / wall:>9.0f} MB/s  {cpu * 1000 / total:>6.2f} ms/MB gateway"
        f"  {writer * 1000 / total:>6.2f} ms/MB writer"
        f"  {cast.stat().st_size / 2**20 / total:>6.2f} MB recorded per MB of output"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sshgate-bench-rec-") as tmp:
        print(f"## Recorder alone: {args.size_mb} MB of terminal output into one exec cast")
        for name, chunk in STREAMS.items():
            await one(name, chunk, args.size_mb, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
