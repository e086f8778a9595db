"""Reload policies when a ``.rego`` file under ``policies.paths`` changes (polling: no inotify needed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable

from sshgate import audit
from sshgate.policy.loader import ReloadableDecisionPoint
from sshgate.policy.sources import PolicyLoadError, rego_files

Fingerprint = frozenset[tuple[str, int, int]]


def fingerprint(paths: Iterable[str]) -> Fingerprint | str:
    """Name, mtime and size of every served file; a missing path is its own (changed) state."""
    try:
        files = rego_files(paths)
        return frozenset((str(f), (st := os.stat(f)).st_mtime_ns, st.st_size) for f in files)
    except (PolicyLoadError, OSError) as exc:
        return str(exc)


async def watch_policies(
    point: ReloadableDecisionPoint, stop: asyncio.Event, interval_s: float = 1.0
) -> None:
    """Poll every ``interval_s`` until ``stop`` is set; a failed reload is logged, the old set serves on."""
    log = audit.logger()
    seen = await asyncio.to_thread(fingerprint, point.config.paths)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        now = await asyncio.to_thread(fingerprint, point.config.paths)
        if now == seen or stop.is_set() or point.config.engine != "embedded":
            continue
        seen = now
        try:
            await point.reload()
        except PolicyLoadError as exc:
            log.warning("policy.reload_failed", error=str(exc))
        else:
            log.info("policy.reloaded", paths=list(point.config.paths))
