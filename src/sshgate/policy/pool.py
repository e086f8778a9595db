"""The embedded engine's worker processes: each evaluation goes to an idle one, under a deadline.

Every worker compiles the same modules (:mod:`sshgate.policy.worker`). An evaluation still
running at its deadline is answered with :class:`EngineTimeout`, and its worker is killed and
replaced: a thread could not be stopped (nor, as regorus holds the GIL, run beside the event
loop), a process can. The event loop never waits for a rule.

What a slow rule costs (docs/policies.md): its worker until the deadline, then a restart. One
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
EXIT_GRACE_S = 2.0
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


class _Worker(asyncio.SubprocessProtocol):
    """One worker process: its first line answers the modules, then one line per job it is given."""

    def __init__(self, pool: EnginePool) -> None:
        loop = asyncio.get_running_loop()
        self.pool = pool
        self.started: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.ended: asyncio.Future[None] = loop.create_future()
        self.job: _Job | None = None
        self.end_reason = ""
        self._transport: asyncio.SubprocessTransport | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio's classes; they have the same methods.
        self._transport = cast(asyncio.SubprocessTransport, transport)

    def send(self, line: bytes) -> None:
        stdin = self._transport.get_pipe_transport(0) if self._transport else None
        if stdin is not None and not stdin.is_closing():
            cast(asyncio.WriteTransport, stdin).write(line)

    def run(self, job: _Job) -> None:
        self.job, job.worker = job, self
        self.send(job.line)

    def finish(self) -> None:
        """End of input: the worker exits once it has answered what it holds."""
        stdin = self._transport.get_pipe_transport(0) if self._transport else None
        if stdin is not None:
            stdin.close()

    def kill(self, reason: str) -> None:
        self.end_reason = self.end_reason or reason
        if self._transport is not None and self._transport.get_returncode() is None:
            with contextlib.suppress(ProcessLookupError):
                self._transport.kill()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self._buffer += data if isinstance(data, bytes) else data.encode()
        while (end := self._buffer.find(b"\n")) >= 0 and not self.end_reason:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._answer(line)
        if len(self._buffer) > MAX_REPLY:
            self.kill(f"answered more than {MAX_REPLY} bytes")

    def _answer(self, line: bytes) -> None:
        try:
            reply = json.loads(line)
            if not isinstance(reply, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            self.kill(f"answered something that is not a reply ({exc})")
            return
        if not self.started.done():
            self.started.set_result(reply)
            return
        job, self.job = self.job, None
        if job is None:
            self.kill("answered without a question")
            return
        self.pool._finished(job)
        if not job.reply.done():
            job.reply.set_result(reply)
        self.pool._released(self)

    def connection_lost(self, exc: Exception | None) -> None:
        """The process exited and its pipes are closed (an answer sent before exit was read)."""
        if self._transport is not None:
            code = self._transport.get_returncode()
            self._transport.close()
            self.end_reason = self.end_reason or f"exited with status {code}"
        error = RegoError(f"policy engine process {self.end_reason}")
        if not self.started.done():
            self.started.set_exception(error)
        job, self.job = self.job, None
        if job is not None:
            self.pool._finished(job)
            if not job.reply.done():
                job.reply.set_exception(error)
        self.ended.set_result(None)
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
        """Start every worker; PolicyLoadError (and none left running) if one cannot compile."""
        pool = cls(modules_line(list(modules)), timeout_s, size)
        started = await asyncio.gather(*(pool._spawn() for _ in range(size)), return_exceptions=True)
        failed = [r for r in started if isinstance(r, BaseException)]
        if failed:
            await pool.aclose()
            raise failed[0]
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

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        worker = _Worker(self)
        try:
            await loop.subprocess_exec(
                lambda: worker,
                sys.executable,
                "-m",
                "sshgate.policy.worker",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
            )
        except OSError as exc:
            raise PolicyLoadError(f"cannot start a policy engine process: {exc}") from None
        try:
            worker.send(self.modules)
            async with asyncio.timeout(START_TIMEOUT_S):
                reply = await worker.started
        except TimeoutError:
            worker.kill("killed: did not compile in time")
            why = f"the policies did not compile within {START_TIMEOUT_S:g} s"
            raise PolicyLoadError(f"{why} (is a rule slow even without input?)") from None
        except RegoError as exc:
            raise PolicyLoadError(str(exc)) from None
        except BaseException:
            worker.kill("killed: start abandoned")
            raise
        if "error" in reply:
            raise PolicyLoadError(str(reply["error"]))
        if self._closing:
            worker.finish()
            return
        self.rules = frozenset(str(r) for r in reply.get("rules", ()))
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
        workers = list(self._workers)
        for worker in workers:
            worker.finish()  # it exits at end of input and drops its engine on its own thread
        ended = [w.ended for w in workers]
        if ended:
            _, late = await asyncio.wait(ended, timeout=EXIT_GRACE_S)
            for worker in workers:
                if worker.ended in late:
                    worker.kill("killed: did not exit when closed")
            if late:
                await asyncio.wait(late)
        self._workers.clear()
        self._idle.clear()
