"""The embedded engine's worker process: one regorus ``Engine``, one evaluation at a time.

Why a process: regorus holds the GIL for the whole of an evaluation, so a slow rule on any thread
of the gateway would stall its event loop; and a process can be killed at the decision's
deadline, where a thread would run on. The engine is built, used and dropped on this process's
main thread, the only thread it may live on.

Wire (docs/policies.md), one JSON document per line (JSON text has no raw newline):

- gateway → worker: the modules ``[[path, text], ...]``; then per evaluation ``rule-path TAB input``.
- worker → gateway: ``{"rules": [path, ...]}`` (the rules it serves) or ``{"error": text}`` and
  exit; per evaluation ``{"value": v}``, ``{}`` when undefined, or ``{"error": text}``.

It exits at end of input: when the gateway closes the pipe, or dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
from collections.abc import Mapping
from typing import IO, Any

from sshgate.policy.rego import RegoError, RegorusEngine
from sshgate.policy.sources import PolicyLoadError, RegoModule

MEMORY_HEADROOM = 512 << 20
"""Address space a worker may add to what it has once regorus is loaded (which reserves 1 GiB up
front): a rule that builds a huge value ends this process (the decision denies), not the
machine's memory."""

_PR_SET_PDEATHSIG = 1


def request_line(path: str, input_doc: Mapping[str, Any]) -> bytes:
    """One evaluation as the worker reads it; raises TypeError/ValueError if the input is not JSON."""
    return b"%s\t%s\n" % (path.encode(), _compact(input_doc).encode())


def modules_line(modules: list[RegoModule]) -> bytes:
    return json.dumps([[m.path, m.text] for m in modules]).encode() + b"\n"


def _json_value(value: object) -> object:
    """Rego sets, as OPA sends them: arrays."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=json.dumps)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


# Encoders made once: json.dumps with any option builds a new encoder per call.
_compact = json.JSONEncoder(separators=(",", ":")).encode
_reply_text = json.JSONEncoder(separators=(",", ":"), default=_json_value).encode


def _reply(out: IO[bytes], doc: Mapping[str, Any]) -> None:
    try:
        line = _reply_text(doc)
    except (TypeError, ValueError) as exc:
        line = json.dumps({"error": f"the rule's value is not JSON: {exc}"})
    out.write(line.encode() + b"\n")
    out.flush()


def serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """Compile the first line's modules, then answer one evaluation per line until end of input."""
    first = inp.readline()
    if not first:
        return
    try:
        engine = RegorusEngine.compile([RegoModule(path, text) for path, text in json.loads(first)])
    except PolicyLoadError as exc:
        _reply(out, {"error": str(exc)})
        return
    _reply(out, {"rules": [r.path for r in engine.rules() if not r.function]})
    for line in iter(inp.readline, b""):
        path, _, doc = line.partition(b"\t")
        try:
            value = engine.eval_rule(path.decode(), doc.decode())
        except (RegoError, UnicodeDecodeError) as exc:
            _reply(out, {"error": str(exc)})
            continue
        _reply(out, {} if value is None else {"value": value})


def _confine() -> None:
    """Die with the gateway even mid-evaluation, and cap memory (Linux only: the gateway's target)."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    with open("/proc/self/statm", encoding="ascii") as statm:
        size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (size + MEMORY_HEADROOM, size + MEMORY_HEADROOM))


def main() -> int:
    """Signals meant for the gateway's group are its to act on: it ends its workers itself."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    parent = os.getppid()
    _confine()
    if os.getppid() != parent:  # the gateway died before the death signal was armed
        return 1
    # Replies get their own descriptor; Rego print() and anything else writing to stdout
    # lands on stderr, the gateway's log stream, instead of corrupting the wire.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    with contextlib.suppress(BrokenPipeError):  # the gateway is gone: nobody to answer
        serve(sys.stdin.buffer, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
