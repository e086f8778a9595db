"""A recording that falls behind pauses the upstream, and the upstream resumes once it caught up."""

from __future__ import annotations

import asyncio
from typing import Any

from sshgate.gateway.relay import RECORDING_HIGH_WATER, ChannelRelay


class SlowRecording:
    def __init__(self) -> None:
        self.pending = 0

    def output(self, data: bytes, stderr: bool = False) -> None:
        self.pending += len(data)

    def backlog(self) -> int:
        return self.pending

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class Upstream:
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pause_reading(self) -> None:
        self.paused += 1

    def resume_reading(self) -> None:
        self.resumed += 1

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class Client:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes, datatype: object = None) -> None:
        self.written += len(data)

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


async def test_recording_backlog_pauses_then_resumes_upstream() -> None:
    relay = ChannelRelay()
    recording, up, client = SlowRecording(), Upstream(), Client()
    relay.recording = recording  # type: ignore[assignment]
    relay.attach_upstream(up)  # type: ignore[arg-type]
    relay.attach_client(client)
    chunk = b"x" * 32768
    for _ in range(RECORDING_HIGH_WATER // len(chunk) + 2):
        relay.upstream_data(chunk, False)
    assert up.paused == 1 and client.written > RECORDING_HIGH_WATER
    relay.pause_writing()  # the client's window fills meanwhile
    recording.pending = 0  # the writer caught up
    await asyncio.sleep(0.1)
    assert up.resumed == 1  # from attach_client only: the client is still full
    relay.resume_writing()
    assert up.resumed == 2
