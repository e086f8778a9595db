"""SessionPump, the adapter between a pull-style SSM session and the relay: what a client can
make it hold."""

from __future__ import annotations

import asyncio

from sshgate.upstream.ssm_relay import Chunk, SessionPump


class _Client:
    paused = False

    def upstream_data(self, data: bytes, stderr: bool) -> None: ...
    def upstream_eof(self) -> None: ...
    def upstream_exit(self, status: int | None, signal: object) -> None: ...
    def upstream_closed(self, error: str | None) -> None: ...
    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


async def test_window_changes_waiting_to_be_sent_collapse_into_the_newest() -> None:
    # Window changes are outside SSH flow control: while the agent has not taken the first one,
    # a client sending a million must not queue a million.
    sent: list[object] = []
    agent_ready = asyncio.Event()
    never = asyncio.Event()

    async def read() -> Chunk | None:
        await never.wait()
        return None

    async def write(data: bytes) -> None:
        sent.append(data)

    async def close() -> None: ...

    async def resize(cols: int, rows: int) -> None:
        await agent_ready.wait()
        sent.append((cols, rows))

    pump = SessionPump(_Client(), read, write, close, resize=resize)
    pump.resize(80, 24, 0, 0)
    await asyncio.sleep(0)  # the writer takes the first and waits for the agent
    for n in range(100_000):
        pump.resize(100 + n % 50, 40, 0, 0)
    pump.resize(132, 50, 0, 0)
    assert pump._queue.qsize() == 1
    pump.write(b"typed")  # input after a size keeps its place: the next sizes queue behind it
    pump.resize(1, 1, 0, 0)
    pump.resize(2, 2, 0, 0)
    assert pump._queue.qsize() == 3
    agent_ready.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert sent == [(80, 24), (132, 50), b"typed", (2, 2)]
    for task in pump._tasks:
        task.cancel()
    await asyncio.gather(*pump._tasks, return_exceptions=True)


async def test_sizes_between_single_bytes_still_pause_the_client() -> None:
    # Each queued item costs more than its bytes: a client alternating window changes and 1-byte
    # writes is paused after a few thousand items, not half a million.
    stuck = asyncio.Event()

    async def read() -> Chunk | None:
        await stuck.wait()
        return None

    async def blocked(*_args: object) -> None:
        await stuck.wait()

    client = _Client()
    pump = SessionPump(client, read, blocked, blocked, resize=blocked)
    sent = 0
    while not client.paused:
        pump.resize(80 + sent % 2, 24, 0, 0)
        pump.write(b"x")
        sent += 1
        assert sent < 5000, "never paused"
    for task in pump._tasks:
        task.cancel()
    await asyncio.gather(*pump._tasks, return_exceptions=True)
