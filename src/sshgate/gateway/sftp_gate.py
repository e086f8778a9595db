"""The sftp request stage (docs/policy.md): client packets pass one by one, in order; one that can
change anything waits for the policy, and a blocked one is answered with SSH_FX_PERMISSION_DENIED
and never reaches the server.

Policies see absolute, normalised paths, so the gate first learns the server's working directory:
after the client's INIT it asks the server ``REALPATH "."`` itself, holds the client's requests
until the answer, and takes that answer out of the stream (sftp has no chdir, so once is enough).
Requests the gate cannot judge (unknown packet types, a path with a NUL byte, an id already
outstanding, a handle not known as open) are refused without asking. A request is judged when
every request before it has been forwarded or refused, so a handle means what it will mean to the
server (SftpTracker.judge).

Without a ``request`` rule the relay does not use this at all (its fast path only observes)."""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Awaitable, Callable

from sshgate.policy.decision import Decision
from sshgate.sftp import protocol as p
from sshgate.sftp.protocol import Mutation, SftpProtocolError
from sshgate.sftp.tracker import ClientPacket, SftpTracker, Verdict

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
                if self._failed:  # the stream is no longer followed: nothing more goes through
                    break
                if self._queue or not self._passes(packet):
                    self._queue.append(packet)
                else:
                    self._send(packet)  # nothing waiting ahead of it: no need to queue
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
            [init] = self._tracker.client_packets(first)
        except SftpProtocolError as exc:
            self._stop(f"sftp stream not understood: {exc}")
            return
        self._send(init)
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
            while self._queue and not self._failed:
                packet = self._queue[0]
                verdict = self._judge(packet)
                if verdict.refusal is not None:
                    self._refused(packet.request, verdict.refusal)
                    self._deny(verdict, verdict.refusal)
                    continue
                if verdict.change is not None:
                    decision = await self._decide(verdict.change)
                    if not decision.allowed:
                        self._deny(verdict, decision.client_text())
                        continue
                self._send(self._queue.popleft())
                if self._paused and len(self._queue) < _PAUSE_AT // 2:
                    self._paused = False
                    self._resume()
        finally:
            self._task = None

    def _judge(self, packet: ClientPacket) -> Verdict:
        """``packet`` judged now, with every packet before it forwarded or refused."""
        verdict = self._tracker.judge(packet.request)
        refusal = _refusal(packet.request, verdict.change) or verdict.refusal
        return Verdict(verdict.change, refusal)

    def _passes(self, packet: ClientPacket) -> bool:
        verdict = self._judge(packet)
        return verdict.change is None and verdict.refusal is None

    def _deny(self, verdict: Verdict, message: str) -> None:
        packet = self._queue.popleft()
        self._reply(self._tracker.deny(packet.request, verdict.change, message))

    def _send(self, packet: ClientPacket) -> None:
        self._forward(packet.data)
        self._tracker.sent(packet.request)
        if self._tracker.failure:  # too many requests unanswered: no longer followed
            self._stop(f"sftp stream not understood: {self._tracker.failure}")

    def _stop(self, reason: str) -> None:
        self._failed = True
        self._fail(reason)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _refusal(request: p.Request, change: Mutation | None) -> str | None:
    """Why the gate refuses ``request`` without asking the policy, whatever the tracker knows."""
    if request.name.startswith("type-"):
        return f"sftp request type {request.type} is not supported by the gateway"
    if change is not None and ("\0" in (change.path or "") or "\0" in (change.target or "")):
        return "a path with a NUL byte is refused"
    return None
