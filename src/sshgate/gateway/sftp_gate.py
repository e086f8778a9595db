"""The sftp request stage (docs/policy.md): client packets pass one by one, in order; one that can
change anything waits for the policy, and a blocked one is answered with SSH_FX_PERMISSION_DENIED
and never reaches the server.

Policies see absolute, normalised paths, so the gate first learns the server's working directory:
after the client's INIT it asks the server ``REALPATH "."`` itself, holds the client's requests
until the answer, and takes that answer out of the stream (sftp has no chdir, so once is enough).
Requests the gate cannot judge (unknown packet types, a path with a NUL byte, FSETSTAT on a handle
it never saw opened) are refused without asking.

Without a ``request`` rule the relay does not use this at all (its fast path only observes)."""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Awaitable, Callable

from sshgate.policy.decision import Decision
from sshgate.sftp import protocol as p
from sshgate.sftp.protocol import Mutation, SftpProtocolError
from sshgate.sftp.tracker import ClientPacket, SftpTracker

_PAUSE_AT = 64
_CWD_REQUEST_ID = 0xFFFFFFFF  # any id works: no client request is outstanding when it is sent


class SftpGate:
    def __init__(
        self,
        tracker: SftpTracker,
        forward: Callable[[bytes], None],
        deliver: Callable[[bytes], None],
        reply: Callable[[bytes], None],
        decide: Callable[[Mutation], Awaitable[Decision]],
        refused: Callable[[p.Request, str], None],
        pause: Callable[[], None],
        resume: Callable[[], None],
        fail: Callable[[str], None],
    ) -> None:
        """``forward`` sends to the server, ``deliver`` passes server bytes on to the client (and
        its recording), ``reply`` answers the client directly, ``refused`` audits a refusal made
        without asking, ``fail`` ends the channel."""
        self._tracker = tracker
        self._forward = forward
        self._deliver = deliver
        self._reply = reply
        self._decide = decide
        self._refused = refused
        self._pause = pause
        self._resume = resume
        self._fail = fail
        self._queue: deque[ClientPacket] = deque()
        self._task: asyncio.Task[None] | None = None
        self._paused = False
        self._early: bytearray | None = bytearray()  # client bytes until the working directory is known
        self._asked_cwd = False
        self._server_head: bytearray | None = bytearray()  # server bytes until the REALPATH answer
        self._failed = False

    # client → server

    def feed(self, data: bytes) -> None:
        if self._failed:
            return
        if self._early is not None:
            self._hold(data)
            return
        try:
            for packet in self._tracker.client_packets(data):
                if not self._queue and packet.mutation is None and _refusal(packet) is None:
                    self._forward(packet.data)  # nothing waiting ahead of it: no need to queue
                else:
                    self._queue.append(packet)
        except SftpProtocolError as exc:
            self._stop(f"sftp stream not understood: {exc}")
        if self._queue and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        if len(self._queue) >= _PAUSE_AT and not self._paused:
            self._paused = True
            self._pause()

    def _hold(self, data: bytes) -> None:
        """Before the working directory is known: forward INIT, ask REALPATH, keep the rest."""
        assert self._early is not None
        self._early += data
        if len(self._early) > 2 * p.MAX_PACKET:  # a client does not pipeline much before VERSION
            self._stop("sftp stream not understood: too much data before the handshake completed")
            return
        if self._asked_cwd:
            if self._early and not self._paused:
                self._paused = True
                self._pause()
            return
        if len(self._early) < 5:
            return
        length, ptype = struct.unpack_from(">IB", self._early)
        if ptype != p.INIT or not 1 <= length <= p.MAX_PACKET:
            self._stop("sftp stream not understood: it must start with INIT")
            return
        if len(self._early) < 4 + length:
            return
        first, rest = bytes(self._early[: 4 + length]), bytes(self._early[4 + length :])
        try:
            list(self._tracker.client_packets(first))
        except SftpProtocolError as exc:
            self._stop(f"sftp stream not understood: {exc}")
            return
        self._forward(first)
        self._forward(p.realpath_packet(_CWD_REQUEST_ID, "."))
        self._asked_cwd = True
        self._early = bytearray()
        self._hold(rest)

    # server → client

    def server_data(self, data: bytes) -> None:
        if self._server_head is None:
            self._deliver(data)
            return
        if self._failed:
            return
        self._server_head += data
        head = self._server_head
        while len(head) >= 5:
            length, ptype = struct.unpack_from(">IB", head)
            if not 1 <= length <= p.MAX_PACKET:
                self._stop("the sftp server's stream is not understood")
                return
            if len(head) < 4 + length:
                return
            packet, rest = bytes(head[: 4 + length]), head[4 + length :]
            head = self._server_head = rest
            try:
                reply = p.parse_reply(ptype, packet[5:])
            except SftpProtocolError:
                reply = p.Reply(-1, None)
            if ptype == p.VERSION and reply.version == 3:
                self._deliver(packet)
            elif reply.type in (p.NAME, p.STATUS) and reply.id == _CWD_REQUEST_ID:
                self._learned_cwd(reply.name, bytes(rest))
                return
            else:
                self._stop("the sftp server does not speak version 3 as expected")
                return

    def _learned_cwd(self, cwd: str | None, rest: bytes) -> None:
        if cwd is None or not cwd.startswith("/") or "\0" in cwd:
            self._stop("the sftp server did not tell its working directory")
            return
        self._tracker.cwd = p.absolute(cwd, "/")
        self._server_head = None
        early, self._early = bytes(self._early or b""), None
        if rest:
            self._deliver(rest)
        if self._paused:
            self._paused = False
            self._resume()
        if early:
            self.feed(early)

    # decisions, in order

    async def _drain(self) -> None:
        try:
            while self._queue:
                packet = self._queue[0]
                refusal = _refusal(packet)
                if refusal is not None:
                    self._refused(packet.request, refusal)
                    self._queue.popleft()
                    self._reply(self._tracker.deny(packet, refusal))
                    continue
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

    def _stop(self, reason: str) -> None:
        self._failed = True
        self._fail(reason)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _refusal(packet: ClientPacket) -> str | None:
    """Why the gate refuses ``packet`` without asking the policy, or None."""
    request, change = packet.request, packet.mutation
    if request.name.startswith("type-"):
        return f"sftp request type {request.type} is not supported by the gateway"
    if change is None:
        return None
    if request.name == "fsetstat" and change.path is None:
        return "the gateway does not know the file behind this handle"
    if "\0" in (change.path or "") or "\0" in (change.target or ""):
        return "a path with a NUL byte is refused"
    return None
