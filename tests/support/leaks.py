"""What a gateway process holds after its sessions ended: open descriptors and recordings."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

from tests.support.gateway import GatewayProcess


def open_fds(gw: GatewayProcess) -> list[str]:
    """What each of the gateway process's descriptors points at (``socket:[…]``, a path...)."""
    assert gw.process is not None
    found = []
    for fd in os.listdir(f"/proc/{gw.process.pid}/fd"):
        try:
            found.append(os.readlink(f"/proc/{gw.process.pid}/fd/{fd}"))
        except FileNotFoundError:
            continue
    return found


def recording_docs(gw: GatewayProcess) -> list[dict[str, object]]:
    root = Path(gw.config["data_dir"]) / "recordings"
    return [json.loads(p.read_text()) for p in sorted(root.glob("[0-9]*/*/session.json"))]


def statuses(gw: GatewayProcess) -> Counter[str]:
    return Counter(str(doc["status"]) for doc in recording_docs(gw))


def settle(
    gw: GatewayProcess, baseline: int | None = None, timeout: float = 20.0
) -> tuple[list[str], Counter[str]]:
    """Wait (bounded) until no recording is active and the descriptors are back to ``baseline``;
    returns what is left either way, for the caller to assert on."""
    deadline = time.monotonic() + timeout
    while True:
        fds, states = open_fds(gw), statuses(gw)
        settled = not states["active"] and (baseline is None or len(fds) <= baseline)
        if settled or time.monotonic() > deadline:
            return fds, states
        time.sleep(0.2)
