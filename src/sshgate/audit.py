"""The audit log: structlog JSON lines on stdout, one event name per decision (docs/operations.md).

Secrets are kept out by construction (they are never passed to a log call); the scrubber is a
second line of defence for field names that could carry one.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_FIELDS = frozenset({"password", "token", "secret", "private_key", "passphrase", "key_data"})


def _scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in _SECRET_FIELDS & event.keys():
        event[name] = "[redacted]"
    return event


def _add_pid(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Several workers can share one log stream; the pid tells their lines apart."""
    event["pid"] = os.getpid()
    return event


def configure(stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """Send JSON lines to ``stream`` (stdout by default); call once per process."""
    out = stream or sys.stdout
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_pid,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _scrub,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    # asyncssh logs through stdlib logging; keep its chatter out of the audit stream.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


def logger(**context: Any) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger("sshgate").bind(**context)  # type: ignore[no-any-return]
