"""The sftp request stage: client packets pass one by one, in order, and a mutating one waits for
the policy; a blocked one is answered with SSH_FX_PERMISSION_DENIED and never reaches upstream.

Without a ``request`` rule the relay does not use this at all (its fast path only observes)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from sshgate.policy.decision import Decision
from sshgate.sftp.protocol import Mutation, SftpProtocolError
from sshgate.sftp.tracker import ClientPacket, SftpTracker

_PAUSE_AT = 64


class SftpGate:
    def __init__(
        self,
        tracker: SftpTracker,
        forward: Callable[[bytes], None],
        reply: Callable[[bytes], None],
        decide: Callable[[Mutation], Awaitable[Decision]],
        pause: Callable[[], None],
        resume: Callable[[], None],
        fail: Callable[[str], None],
    ) -> None:
        self._tracker = tracker
        self._forward = forward
        self._reply = reply
        self._decide = decide
        self._pause = pause
        self._resume = resume
        self._fail = fail
        self._queue: deque[ClientPacket] = deque()
        self._task: asyncio.Task[None] | None = None
        self._paused = False

    def feed(self, data: bytes) -> None:
        try:
            packets = self._tracker.client_packets(data)
        except SftpProtocolError as exc:
            self._fail(f"sftp stream not understood: {exc}")
            return
        for packet in packets:
            if not self._queue and packet.mutation is None:
                self._forward(packet.data)  # nothing waiting ahead of it: no need to queue
            else:
                self._queue.append(packet)
        if self._queue and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        if len(self._queue) >= _PAUSE_AT and not self._paused:
            self._paused = True
            self._pause()

    async def _drain(self) -> None:
        try:
            while self._queue:
                packet = self._queue[0]
                if packet.mutation is not None:
                    decision = await self._decide(packet.mutation)
                    if not decision.allowed:
                        self._queue.popleft()
                        self._reply(self._tracker.deny(packet, decision.client_text()))
                        continue
                self._queue.popleft()
                self._forward(packet.data)
                if self._paused and len(self._queue) < _PAUSE_AT // 2:
                    self._paused = False
                    self._resume()
        finally:
            self._task = None

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
