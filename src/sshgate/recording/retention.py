"""``recording.retention_days`` for the local sink: delete sessions that ended longer ago."""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import shutil
from pathlib import Path

from sshgate.recording.manifest import SESSION_FILE

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _ended(doc: dict[str, object]) -> datetime.datetime | None:
    """When the session ended (either layout), or None while it is active."""
    if doc.get("status") == "active":
        return None
    text = doc.get("ended") or doc.get("ended_at") or doc.get("started") or doc.get("started_at")
    try:
        return datetime.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def prune(root: Path, days: int, now: datetime.datetime) -> list[str]:
    """Delete every session under ``root`` that ended more than ``days`` days before ``now``;
    returns their ids. Only day directories older than the cutoff are looked into (a session
    ends after it starts), and a session that is active or unreadable is kept."""
    cutoff = now - datetime.timedelta(days=days)
    removed = []
    for day in sorted(root.iterdir()):
        if not (_DAY.fullmatch(day.name) and day.is_dir() and day.name < cutoff.strftime("%Y-%m-%d")):
            continue
        for session in sorted(day.iterdir()):
            try:
                doc = json.loads((session / SESSION_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            ended = _ended(doc) if isinstance(doc, dict) else None
            if ended is not None and ended < cutoff:
                shutil.rmtree(session, ignore_errors=True)
                removed.append(session.name)
        with contextlib.suppress(OSError):  # not empty, or another worker removed it first
            day.rmdir()
    return removed
