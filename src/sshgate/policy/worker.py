"""The embedded engine's processes: a template that compiles the policies, and workers forked from it.

Why processes: regorus holds the GIL for the whole of an evaluation, so a slow rule on any thread
of the gateway would stall its event loop; and a process can be killed at the decision's
deadline, where a thread would run on. Why a template: a worker killed at a deadline is replaced
by a fork of a process that already holds the compiled engine, in about a millisecond; starting
Python and compiling again took 0.1-1 s on a loaded machine, while the other workers carried
the load. A regorus ``Engine`` may only be used on the thread that made it: a fork's only thread
is a copy of that thread. What this guarantees and costs: docs/policy.md, "Evaluation".

Wire: the template reads the modules ``[[path, text], ...]`` as one line on
stdin and answers on stdout ``{"rules": [path, ...]}`` (the rules it serves), or
``{"error": text}`` and exits. Then it takes commands on its control socket (SOCK_SEQPACKET,
descriptor number in ``argv[1]``): ``fork`` with one stream socket attached, answered with the
new worker's pid; ``kill PID``, which it obeys only for a worker of its own not yet reaped. It
exits when the control socket closes, after giving its workers time to finish. A worker reads
``rule-path TAB input`` lines on its socket and answers each with one line, ``{"value": v}``,
``{}`` when undefined, or ``{"error": text}``; it exits at end of input.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

from sshgate.policy.rego import RegoError, RegorusEngine
from sshgate.policy.sources import PolicyLoadError, RegoModule

MEMORY_HEADROOM = 512 << 20
"""Address space a process may add to what it has once regorus is loaded (which reserves 1 GiB
up front): a rule that builds a huge value ends its worker (the decision denies), not the
machine's memory."""
EXIT_GRACE_S = 2.0
"""How long the template waits for its workers to finish when the gateway lets it go."""

_PR_SET_PDEATHSIG = 1


def _json_value(value: object) -> object:
    """Rego sets, as OPA sends them: arrays."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=json.dumps)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


# Encoders made once: json.dumps with any option builds a new encoder per call.
_compact = json.JSONEncoder(separators=(",", ":")).encode
_reply_text = json.JSONEncoder(separators=(",", ":"), default=_json_value).encode


def request_line(path: str, input_doc: Mapping[str, Any]) -> bytes:
    """One evaluation as a worker reads it; raises TypeError/ValueError if the input is not JSON."""
    return b"%s\t%s\n" % (path.encode(), _compact(input_doc).encode())


def modules_line(modules: list[RegoModule]) -> bytes:
    return json.dumps([[m.path, m.text] for m in modules]).encode() + b"\n"


def _reply(out: IO[bytes], doc: Mapping[str, Any]) -> None:
    try:
        line = _reply_text(doc)
    except (TypeError, ValueError) as exc:
        line = json.dumps({"error": f"the rule's value is not JSON: {exc}"})
    out.write(line.encode() + b"\n")
    out.flush()


def compile_line(line: bytes, out: IO[bytes]) -> RegorusEngine | None:
    """Compile the modules line and say which rules are served, or why not (then None)."""
    try:
        engine = RegorusEngine.compile([RegoModule(path, text) for path, text in json.loads(line)])
    except PolicyLoadError as exc:
        _reply(out, {"error": str(exc)})
        return None
    _reply(out, {"rules": [r.path for r in engine.rules() if not r.function]})
    return engine


def answer(engine: RegorusEngine, inp: IO[bytes], out: IO[bytes]) -> None:
    """One answer per ``rule-path TAB input`` line, until end of input."""
    for line in iter(inp.readline, b""):
        path, _, doc = line.partition(b"\t")
        try:
            value = engine.eval_rule(path.decode(), doc.decode())
        except (RegoError, UnicodeDecodeError) as exc:
            _reply(out, {"error": str(exc)})
            continue
        _reply(out, {} if value is None else {"value": value})


def _die_with_parent() -> None:
    """SIGKILL when the parent ends, even mid-evaluation (Linux: the gateway's target)."""
    parent = os.getppid()
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before the signal was armed
        os._exit(1)


def _cap_memory() -> None:
    if sys.platform != "linux":
        return
    with open("/proc/self/statm", encoding="ascii") as statm:
        size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (size + MEMORY_HEADROOM, size + MEMORY_HEADROOM))


def _reap(workers: set[int]) -> None:
    with contextlib.suppress(ChildProcessError):
        while workers:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            workers.discard(pid)


def _run_worker(engine: RegorusEngine, conn: socket.socket) -> None:
    """In a fresh fork: keep only the connection, answer on it, exit without unwinding the template."""
    _die_with_parent()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the template's stdin is the gateway's pipe, not this worker's
    with contextlib.suppress(ConnectionError):
        answer(engine, conn.makefile("rb"), conn.makefile("wb"))
    os._exit(0)


def serve_forks(engine: RegorusEngine, control: socket.socket, out: IO[bytes]) -> None:
    """Fork a worker per ``fork`` command and kill on request, until the control socket closes."""
    workers: set[int] = set()
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(control, 64, 1)
        except ConnectionError:
            msg, fds = b"", []
        _reap(workers)
        if not msg:
            break
        if msg == b"fork" and len(fds) == 1:
            conn = socket.socket(fileno=fds[0])
            pid = os.fork()
            if pid == 0:
                control.close()
                out.close()
                _run_worker(engine, conn)
            conn.close()
            workers.add(pid)
            control.send(str(pid).encode())
        else:
            for fd in fds:
                os.close(fd)
            command, _, number = msg.partition(b" ")
            if command == b"kill" and number.isdigit() and int(number) in workers:
                os.kill(int(number), signal.SIGKILL)  # ours and not reaped: not a reused pid
    deadline = time.monotonic() + EXIT_GRACE_S
    while workers and time.monotonic() < deadline:
        time.sleep(0.01)
        _reap(workers)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)


def main() -> int:
    """The template. Signals meant for the gateway's group are its to act on: it ends us itself."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    _die_with_parent()
    _cap_memory()
    # Answers get their own descriptor; Rego print() and anything else writing to stdout
    # lands on stderr, the gateway's log stream, instead of corrupting the wire.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    control = socket.socket(fileno=int(sys.argv[1]))
    with contextlib.suppress(ConnectionError):  # the gateway is gone: nobody to answer
        first = sys.stdin.buffer.readline()
        engine = compile_line(first, out) if first else None
        if engine is not None:
            serve_forks(engine, control, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
