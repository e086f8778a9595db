"""The embedded engine's worker processes: each evaluation goes to an idle one, under a deadline.

A template process compiles the policies once; workers are forks of it
(:mod:`sshgate.policy.worker`). An evaluation still running at its deadline is answered with
:class:`EngineTimeout`, and its worker is killed and replaced by a new fork: a thread could not
be stopped (nor, as regorus holds the GIL, run beside the event loop), a process can. The event
loop never waits for a rule.

What a slow rule costs (docs/policy.md, "Evaluation"): its worker until the deadline, then a fork. One
identity runs at most one evaluation at a time, so a rule that is slow for some user's input
(by accident, or because that user found out) holds one worker, and everyone else is served by
the others. Evaluations wait for a free worker in arrival order, within their own deadline;
past ``MAX_WAITING`` waiting, more are refused at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sshgate import audit
from sshgate.policy.rego import RegoError
from sshgate.policy.sources import PolicyLoadError, RegoModule
from sshgate.policy.worker import modules_line, request_line

POOL_SIZE = 2
"""Workers per gateway process: while one is stuck in a slow rule, the other serves everyone else."""
START_TIMEOUT_S = 10.0
"""Start and compile, which also evaluates every rule once without input."""
MAX_REPLY = 1 << 20
MAX_WAITING = 1024
EXIT_GRACE_S = 3.0
"""How long the template may take to exit once let go (it gives its workers 2 s to finish)."""
RESTART_DELAYS_S = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class EngineTimeout(Exception):
    """No answer by the deadline; the message says whether the rule ran or waited for a worker."""


@dataclass(eq=False, slots=True)
class _Job:
    path: str
    line: bytes
    key: str | None
    deadline: float
    reply: asyncio.Future[dict[str, Any]]
    worker: _Worker | None = None
    finished: bool = False
    """Answered, failed or expired: nothing is left for the deadline to stop."""


class _Lines:
    """Newline-delimited JSON objects from a process we started, at most ``MAX_REPLY`` bytes each."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """The complete replies in ``data``; ValueError for anything else (the sender is broken)."""
        self._buffer += data
        replies = []
        while (end := self._buffer.find(b"\n")) >= 0:
            reply = json.loads(bytes(self._buffer[:end]))
            del self._buffer[: end + 1]
            if not isinstance(reply, dict):
                raise ValueError("a reply is not a JSON object")
            replies.append(reply)
        if len(self._buffer) > MAX_REPLY:
            raise ValueError(f"answered more than {MAX_REPLY} bytes")
        return replies


class _Template(asyncio.SubprocessProtocol):
    """The process that compiled the policies; it forks the workers and kills them on request."""

    def __init__(self, control: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self.control = control
        self.compiled: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.ended: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.SubprocessTransport | None = None
        self._lines = _Lines()
        self._forking = asyncio.Lock()

    @classmethod
    async def start(cls, modules: bytes) -> tuple[_Template, frozenset[str]]:
        """A template that compiled ``modules``, and the rules it serves; raises PolicyLoadError."""
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        template = cls(ours)
        try:
            await loop.subprocess_exec(
                lambda: template,
                sys.executable,
                "-m",
                "sshgate.policy.worker",
                str(theirs.fileno()),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
                pass_fds=(theirs.fileno(),),
            )
        except OSError as exc:
            ours.close()
            raise PolicyLoadError(f"cannot start a policy engine process: {exc}") from None
        finally:
            theirs.close()
        try:
            template._send_modules(modules)
            async with asyncio.timeout(START_TIMEOUT_S):
                reply = await template.compiled
        except TimeoutError:
            template.terminate()
            why = f"the policies did not compile within {START_TIMEOUT_S:g} s"
            raise PolicyLoadError(f"{why} (is a rule slow even without input?)") from None
        except BaseException:
            template.terminate()
            raise
        if "error" in reply:
            raise PolicyLoadError(str(reply["error"]))
        return template, frozenset(str(r) for r in reply.get("rules", ()))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio's classes; they have the same methods.
        self._transport = cast(asyncio.SubprocessTransport, transport)

    def _send_modules(self, modules: bytes) -> None:
        stdin = self._transport.get_pipe_transport(0) if self._transport else None
        if stdin is not None:
            cast(asyncio.WriteTransport, stdin).write(modules)
            stdin.close()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        try:
            replies = self._lines.feed(data if isinstance(data, bytes) else data.encode())
        except ValueError as exc:
            replies = [{"error": f"the policy engine process answered badly: {exc}"}]
        if replies and not self.compiled.done():
            self.compiled.set_result(replies[0])

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            code = self._transport.get_returncode()
            self._transport.close()
        else:
            code = None
        self.control.close()
        if not self.compiled.done():
            self.compiled.set_exception(
                PolicyLoadError(f"the policy engine process exited with status {code}")
            )
        self.ended.set_result(None)

    async def fork(self) -> tuple[socket.socket, int]:
        """A new worker's connection and pid; raises PolicyLoadError if the template cannot fork."""
        async with self._forking:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                socket.send_fds(self.control, [b"fork"], [theirs.fileno()])
                async with asyncio.timeout(START_TIMEOUT_S):
                    reply = await asyncio.get_running_loop().sock_recv(self.control, 32)
                pid = int(reply)
            except (OSError, TimeoutError, ValueError) as exc:
                ours.close()
                raise PolicyLoadError(f"the policy engine process could not fork a worker: {exc!r}") from None
            finally:
                theirs.close()
        return ours, pid

    def kill(self, pid: int) -> None:
        with contextlib.suppress(OSError):  # gone already: so are its workers
            self.control.send(b"kill %d" % pid)

    def release(self) -> None:
        """The template gives its workers a moment to finish, then exits."""
        self.control.close()

    def terminate(self) -> None:
        if self._transport is not None and self._transport.get_returncode() is None:
            with contextlib.suppress(ProcessLookupError):
                self._transport.kill()


class _Worker(asyncio.Protocol):
    """One forked worker, on its own socket: one line per job it is given, one line back."""

    def __init__(self, pool: EnginePool, template: _Template, pid: int) -> None:
        self.pool = pool
        self.template = template
        self.pid = pid
        self.job: _Job | None = None
        self.end_reason = ""
        self._transport: asyncio.Transport | None = None
        self._lines = _Lines()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def run(self, job: _Job) -> None:
        self.job, job.worker = job, self
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(job.line)

    def finish(self) -> None:
        """End of input: the worker exits once it has answered what it holds."""
        if self._transport is not None:
            self._transport.close()

    def kill(self, reason: str) -> None:
        self.end_reason = self.end_reason or reason
        self.template.kill(self.pid)

    def data_received(self, data: bytes) -> None:
        if self.end_reason:
            return
        try:
            replies = self._lines.feed(data)
        except ValueError as exc:
            self.kill(str(exc))
            return
        for reply in replies:
            self._answer(reply)

    def _answer(self, reply: dict[str, Any]) -> None:
        job, self.job = self.job, None
        if job is None:
            self.kill("answered without a question")
            return
        self.pool._finished(job)
        if not job.reply.done():
            job.reply.set_result(reply)
        self.pool._released(self)

    def connection_lost(self, exc: Exception | None) -> None:
        """The worker's end closed: it exited, was killed, or the pool let it go."""
        self.end_reason = self.end_reason or "ended"
        job, self.job = self.job, None
        if job is not None:
            self.pool._finished(job)
            if not job.reply.done():
                job.reply.set_exception(RegoError(f"policy engine process {self.end_reason}"))
        self.pool._lost(self)


@dataclass(eq=False)
class EnginePool:
    """``size`` workers compiled from one set of modules, answering within ``timeout_s``.

    Build with :meth:`start`.
    """

    modules: bytes
    timeout_s: float
    size: int
    rules: frozenset[str] = frozenset()
    _template: _Template | None = None
    _template_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _workers: set[_Worker] = field(default_factory=set)
    _idle: list[_Worker] = field(default_factory=list)
    _waiting: deque[_Job] = field(default_factory=deque)
    _running_keys: set[str] = field(default_factory=set)
    _deadlines: deque[_Job] = field(default_factory=deque)
    """Every job not yet known finished, in deadline order (one timeout for all: arrival order)."""
    _watchdog: asyncio.TimerHandle | None = None
    _restarts: set[asyncio.Task[None]] = field(default_factory=set)
    _inflight: int = 0
    _drained: asyncio.Event = field(default_factory=asyncio.Event)
    _closing: bool = False

    @classmethod
    async def start(
        cls, modules: Sequence[RegoModule], timeout_s: float, size: int = POOL_SIZE
    ) -> EnginePool:
        """Compile and start every worker; PolicyLoadError (and nothing left running) if that fails."""
        pool = cls(modules_line(list(modules)), timeout_s, size)
        try:
            for _ in range(size):
                await pool._spawn()
        except BaseException:
            await pool.aclose()
            raise
        return pool

    def has_rule(self, path: str) -> bool:
        return path in self.rules

    async def evaluate(self, path: str, input_doc: Mapping[str, Any], key: str | None = None) -> Any:
        """The rule's value (``None`` when undefined); raises RegoError, or EngineTimeout at the deadline.

        Evaluations with the same ``key`` (an identity) run one at a time.
        """
        if self._closing and not self._workers:
            raise RegoError("the policy engines are closed")
        if len(self._waiting) >= MAX_WAITING:
            raise RegoError(f"every policy engine is busy and {MAX_WAITING} evaluations are waiting")
        try:
            line = request_line(path, input_doc)
        except (TypeError, ValueError) as exc:
            raise RegoError(f"the input is not JSON: {exc}") from None
        loop = asyncio.get_running_loop()
        job = _Job(path, line, key, loop.time() + self.timeout_s, loop.create_future())
        # The deadline outlives a caller that gives up: a rule still running is stopped all the same.
        self._deadlines.append(job)
        if self._watchdog is None:
            self._watchdog = loop.call_at(job.deadline, self._check_deadlines)
        self._waiting.append(job)
        self._dispatch()
        self._inflight += 1
        self._drained.clear()
        try:
            reply = await job.reply
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._drained.set()
        if "error" in reply:
            raise RegoError(str(reply["error"]))
        return reply.get("value")

    def _dispatch(self) -> None:
        held: list[_Job] = []
        while self._idle and self._waiting:
            job = self._waiting.popleft()
            if job.reply.done():  # its caller left, or its deadline passed while it waited
                job.finished = True
            elif job.key is not None and job.key in self._running_keys:
                held.append(job)  # behind the same identity's evaluation
            else:
                if job.key is not None:
                    self._running_keys.add(job.key)
                self._idle.pop().run(job)
        self._waiting.extendleft(reversed(held))

    def _finished(self, job: _Job) -> None:
        job.finished = True
        if job.key is not None:
            self._running_keys.discard(job.key)

    def _check_deadlines(self) -> None:
        """One timer for the pool, not one per evaluation (a uvloop timer costs several µs)."""
        loop = asyncio.get_running_loop()
        self._watchdog = None
        now = loop.time()
        while self._deadlines:
            job = self._deadlines[0]
            if not job.finished and job.deadline > now:
                self._watchdog = loop.call_at(job.deadline, self._check_deadlines)
                return
            self._deadlines.popleft()
            if not job.finished:
                self._expire(job)

    def _expire(self, job: _Job) -> None:
        limit = f"{self.timeout_s * 1000:g} ms"
        worker = job.worker
        if worker is not None and worker.job is job:
            # Finished (and its identity free) once the killed worker is gone.
            worker.kill(f"killed: {job.path} ran past its {limit} deadline")
            error = EngineTimeout(f"{job.path} did not finish within {limit}")
        else:
            job.finished = True
            error = EngineTimeout(f"no policy engine was free within {limit}")
        if not job.reply.done():
            job.reply.set_exception(error)

    def _released(self, worker: _Worker) -> None:
        if worker in self._workers:
            self._idle.append(worker)
        self._dispatch()

    def _lost(self, worker: _Worker) -> None:
        if worker not in self._workers:
            return  # one that never started, or one this pool already let go
        self._workers.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        if self._closing:
            return
        if not worker.end_reason.startswith("killed"):
            audit.logger().warning("policy.engine_lost", reason=worker.end_reason)
        task = asyncio.get_running_loop().create_task(self._restart())
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)
        self._dispatch()  # jobs held behind the lost one's identity may go to another worker

    async def _restart(self) -> None:
        """Replace a lost worker until one starts (the sources compiled before); cancelled by aclose."""
        for delay in itertools.chain(RESTART_DELAYS_S, itertools.repeat(RESTART_DELAYS_S[-1])):
            await asyncio.sleep(delay)
            try:
                await self._spawn()
                return
            except PolicyLoadError as exc:
                audit.logger().error("policy.engine_restart_failed", error=str(exc))

    async def _running_template(self) -> _Template:
        """The template, started again if it died (its workers died with it)."""
        async with self._template_lock:
            if self._template is None or self._template.ended.done():
                self._template, self.rules = await _Template.start(self.modules)
            return self._template

    async def _spawn(self) -> None:
        template = await self._running_template()
        conn, pid = await template.fork()
        worker = _Worker(self, template, pid)
        try:
            await asyncio.get_running_loop().create_unix_connection(lambda: worker, sock=conn)
        except OSError as exc:
            conn.close()
            template.kill(pid)
            raise PolicyLoadError(f"cannot reach a policy engine process: {exc}") from None
        if self._closing:
            worker.finish()
            return
        self._workers.add(worker)
        self._idle.append(worker)
        self._dispatch()

    async def aclose(self, grace_s: float = 0.0) -> None:
        """Let evaluations in flight finish for up to ``grace_s``, then end every worker."""
        self._closing = True
        for task in list(self._restarts):
            task.cancel()
        if self._inflight and grace_s > 0:  # deadlines still hold meanwhile
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), grace_s)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for job in self._waiting:
            if not job.reply.done():
                job.reply.set_exception(RegoError("the policy engines were closed"))
        self._waiting.clear()
        self._deadlines.clear()
        for worker in list(self._workers):
            worker.finish()  # it exits at end of input
        self._workers.clear()
        self._idle.clear()
        template = self._template
        if template is not None:
            # It waits for its workers, then exits, dropping its engine on the thread that made it.
            template.release()
            try:
                await asyncio.wait_for(asyncio.shield(template.ended), EXIT_GRACE_S)
            except TimeoutError:
                template.terminate()
                await template.ended
