"""Recording benchmark, recorder alone (issue 12): what keeping a channel's raw bytes costs the
gateway's process, with the file work in a thread (the recorder) or in a writer process (the
design before it, kept here only as the measured alternative), and how fast `recordings export`
turns a recording into asciicast.

Bytes come from a producer process through a pipe into an asyncio loop, 32 KiB reads as the
relay gets them, so the loop releases the interpreter lock on every read as the relay does.
CPU is the benchmark process plus the writer process (not the producer). Interleaved rounds.
The gateway comparison (recording on/off) is bench_recording_gateway and bench_relay.
Run: .venv/bin/python -m bench.bench_recording [--size-mb 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import mmap
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds
from sshgate.gateway.relay import RECORDING_HIGH_WATER
from sshgate.recording.local import FileRecorder

STREAMS = {"zeros": "head -c {n}M /dev/zero", "yes": "yes | head -c {n}M"}
CHUNK = 32768
FLUSH_BYTES = 1 << 20
META: dict[str, Any] = {"user": {"type": "human", "email": "bench@corp.com"}, "resource": "bench"}

CHILD = """
import os, struct, sys, mmap
from pathlib import Path
from sshgate.recording.files import RecordFile
fd, size = int(sys.argv[1]), 0
out = RecordFile(Path(sys.argv[2]), b"Script started\\n")
shared = None
while (head := os.read(0, 8)):
    (n,) = struct.unpack("<Q", head)
    if shared is None or n > len(shared):
        shared = mmap.mmap(fd, os.fstat(fd).st_size)
    with memoryview(shared) as view:
        out.append([view[:n]])
    os.write(1, b"k")
"""


class ProcessWriter:
    """The alternative: each flush's bytes copied into memory shared with a writer process,
    which hashes and appends them (as recording/writer.py did before the raw layout)."""

    def __init__(self, path: Path) -> None:
        self.memfd = os.memfd_create("bench-recording")
        os.ftruncate(self.memfd, 16 << 20)
        self.shared = mmap.mmap(self.memfd, 16 << 20)
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(self.memfd), str(path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(self.memfd,))  # fmt: skip

    def write(self, chunks: list[bytes]) -> None:
        size = sum(len(c) for c in chunks)
        if size > len(self.shared):
            self.shared.close()
            os.ftruncate(self.memfd, 1 << (size - 1).bit_length())
            self.shared = mmap.mmap(self.memfd, os.fstat(self.memfd).st_size)
        offset = 0
        for chunk in chunks:
            self.shared[offset : offset + len(chunk)] = chunk
            offset += len(chunk)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        os.write(self.proc.stdin.fileno(), struct.pack("<Q", size))
        os.read(self.proc.stdout.fileno(), 1)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()
        self.shared.close()
        os.close(self.memfd)


async def feed(command: str, take: Callable[[bytes], int]) -> None:
    """Pipe the producer's output into ``take`` (which returns the backlog) in 32 KiB reads,
    pausing past the relay's high-water mark as the relay does."""
    loop = asyncio.get_running_loop()
    proc = subprocess.Popen(["sh", "-c", command], stdout=subprocess.PIPE, pipesize=CHUNK)
    assert proc.stdout is not None
    done = loop.create_future()

    class Reader(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            if take(data) > RECORDING_HIGH_WATER:
                self.transport.pause_reading()
                loop.call_later(0.02, self.transport.resume_reading)

        def connection_lost(self, exc: Exception | None) -> None:
            done.set_result(None)

    await loop.connect_read_pipe(Reader, proc.stdout)
    await done
    proc.wait()


async def run_none(command: str, root: Path) -> float:
    await feed(command, lambda data: 0)
    return 0.0


async def run_thread(command: str, root: Path) -> float:
    recorder = FileRecorder(root / "thread")
    session = await recorder.start_session("bench", META)
    chan = session.open_channel("exec", {"command": "bench", "pty": False})

    def take(data: bytes) -> int:
        chan.output(data)
        return chan.backlog()

    await feed(command, take)
    chan.close(0)
    await session.close()
    await recorder.aclose()
    return 0.0


async def run_process(command: str, root: Path) -> float:
    (root / "process").mkdir(exist_ok=True)
    writer = ProcessWriter(root / "process" / "1-exec.out")
    loop = asyncio.get_running_loop()
    pending: list[bytes] = []
    size = 0
    busy: asyncio.Future[None] | None = None

    def flush() -> None:
        nonlocal pending, size, busy
        chunks, pending, size = pending, [], 0
        busy = loop.run_in_executor(None, writer.write, chunks)

    def take(data: bytes) -> int:
        nonlocal size
        pending.append(data)
        size += len(data)
        if size >= FLUSH_BYTES and (busy is None or busy.done()):
            flush()
        return size

    await feed(command, take)
    if busy is not None:
        await busy
    flush()
    assert busy is not None
    await busy
    child_cpu = cpu_seconds(writer.proc.pid)
    writer.close()
    return child_cpu


MODES = {"none": run_none, "thread": run_thread, "process": run_process}


def export_rate(root: Path, size_mb: int) -> tuple[float, float, float]:
    """``recordings export`` of the thread mode's recording: MB/s of recording read (by the
    clock, and per CPU second: the machine is shared) and peak RSS growth (MB)."""
    config = root / "config.yaml"
    config.write_text(f"recording: {{dir: {root / 'thread'}}}\n")
    script = ("import resource, sys\nfrom sshgate.cli import main\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\nmain(sys.argv[1:])\n"
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, file=sys.stderr)\n")  # fmt: skip
    start, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-c", script, "recordings", "export", "bench", "-o", str(root / "out.cast"),
                           "--config", str(config)], capture_output=True, check=True)  # fmt: skip
    wall, cpu1 = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    (root / "out.cast").unlink()
    return size_mb / wall, size_mb / cpu, int(done.stderr.split()[-1]) / 1024


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for stream, template in STREAMS.items():
        command = template.format(n=args.size_mb)
        print(f"## {stream}: {args.size_mb} MB through a recorded exec channel, {args.rounds} rounds")
        print(f"{'mode':<9}{'MB/s':>8}{'CPU s/GB':>10}{'of which writer process':>25}")
        for n in range(args.rounds):
            order = list(MODES) if n % 2 == 0 else list(reversed(MODES))
            for mode in order:
                with tempfile.TemporaryDirectory(prefix="sshgate-bench-rec-", dir="/var/tmp") as tmp:
                    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                    child = await MODES[mode](command, Path(tmp))
                    wall = time.perf_counter() - wall0
                    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
                    own = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
                    per_gb = 1024 / args.size_mb
                    print(
                        f"{mode:<9}{args.size_mb / wall:>8.0f}{(own + child) * per_gb:>10.2f}{child * per_gb:>25.2f}"
                    )
                    if mode == "thread" and n == 0:
                        rate, cpu_rate, grown = export_rate(Path(tmp), args.size_mb)
                        print(f"  export to asciicast: {rate:.0f} MB/s of recording ({cpu_rate:.0f} MB per CPU "
                              f"second), peak memory +{grown:.1f} MB")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
