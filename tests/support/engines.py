"""The policy engine processes of a gateway (or of the test process itself), read from /proc."""

from __future__ import annotations

from pathlib import Path


def engine_processes(parent: int) -> dict[int, set[int]]:
    """``parent``'s policy engine templates, each with the workers it forked."""
    ppids: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if b"sshgate.policy.worker" in cmdline:
            ppids[int(entry.name)] = ppid
    return {
        template: {pid for pid, ppid in ppids.items() if ppid == template}
        for template, ppid in ppids.items()
        if ppid == parent
    }
