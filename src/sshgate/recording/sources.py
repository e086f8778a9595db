"""Where the catalog finds sessions, each kept as a summary that is refreshed incrementally.

A local directory is rescanned one day directory at a time, only when the day directory's mtime
changed (a session was added or removed); sessions that may still change (active, or not yet
readable) are re-read when their session.json was replaced. An ended session's document does not
change (docs/recordings.md), so a warm refresh costs a stat per day and per active session.

S3 has no mtimes on prefixes: the recent days are listed at most every :data:`S3_REFRESH_S`
seconds, the whole prefix every :data:`S3_FULL_S`, and only the session.json objects whose ETag
changed are read again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from sshgate.recording import reader
from sshgate.recording.manifest import SESSION_FILE
from sshgate.recording.recorder import SESSION_ID, RecordingError
from sshgate.recording.store import DAY, LocalFiles, S3Files, SessionFiles, list_objects, stamp_of
from sshgate.recording.summary import SessionSummary, SortKey, sort_key, summarize

log = structlog.get_logger("sshgate.recording")

SETTLE_NS = 1_000_000_000
"""A directory's mtime has a coarse tick: one this recent is scanned again next time."""
S3_REFRESH_S = 2.0
S3_FULL_S = 60.0
"""Between full listings, only the last :data:`S3_RECENT_DAYS` day prefixes are listed: a
session lands under the day it started, when it ends (or, after an outage, at the next start)."""
S3_RECENT_DAYS = 2
S3_READERS = 8
"""session.json objects fetched at once when a listing finds many new ones."""

Place = tuple[str, str]
"""``(day, session id)``: a session directory."""


@dataclass(frozen=True, slots=True)
class Entry:
    summary: SessionSummary
    files: SessionFiles
    login: str
    end_reason: str
    key: SortKey
    """The summary's sort key, computed once."""


class Source(Protocol):
    where: str
    """The directory or S3 URL, for people."""

    def refresh(self) -> set[str]:
        """Catch up with the store; returns the ids of the sessions that came, changed or went."""
        ...

    def entries(self) -> Iterable[Entry]: ...

    def get(self, session_id: str) -> Entry | None: ...


class _Entries:
    """A source's entries by place and by id (an id in two day directories: the earlier day's)."""

    def __init__(self) -> None:
        self._entries: dict[Place, Entry] = {}
        self._places: dict[str, set[Place]] = {}
        self._changed: set[str] = set()

    def entries(self) -> Iterable[Entry]:
        return self._entries.values()

    def get(self, session_id: str) -> Entry | None:
        places = self._places.get(session_id)
        return self._entries[min(places)] if places else None

    def _put(self, place: Place, entry: Entry | None) -> None:
        """Set (or, with None, remove) the entry at ``place``, noting its id if that changed it."""
        had = self._entries.pop(place, None)
        if entry is not None:
            self._entries[place] = entry
            self._places.setdefault(place[1], set()).add(place)
        elif had is not None:
            places = self._places[place[1]]
            places.discard(place)
            if not places:
                del self._places[place[1]]
        if entry != had:
            self._changed.add(place[1])

    def _take_changes(self) -> set[str]:
        changed, self._changed = self._changed, set()
        return changed


def _entry(doc: dict[str, Any], files: SessionFiles, session_id: str) -> Entry:
    """Raises ValueError for a document that is not usable."""
    login, end_reason = doc.get("login"), doc.get("end_reason")
    summary = summarize(doc, session_id)
    return Entry(
        summary,
        files,
        login if isinstance(login, str) else "",
        end_reason if isinstance(end_reason, str) else "",
        sort_key(summary),
    )


class LocalSource(_Entries):
    """The sessions under a local directory (the recordings directory, or the S3 spool)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.where = str(root)
        self._days: dict[str, tuple[int | None, set[str]]] = {}  # day -> (mtime, session ids)
        self._watched: dict[Place, tuple[int, int, int] | None] = {}  # place -> session.json stamp

    def refresh(self) -> set[str]:
        days = set(_subdirectories(self.root, DAY.fullmatch))
        for day in set(self._days) - days:
            for session_id in self._days.pop(day)[1]:
                self._drop((day, session_id))
        loaded: set[Place] = set()
        for day in sorted(days):
            try:
                mtime = os.stat(self.root / day, follow_symlinks=False).st_mtime_ns
            except OSError:
                continue
            known_mtime, known = self._days.get(day, (None, set()))
            if mtime == known_mtime:
                continue
            ids = set(_subdirectories(self.root / day, SESSION_ID.fullmatch))
            for session_id in known - ids:
                self._drop((day, session_id))
            for session_id in ids - known:
                self._load((day, session_id))
                loaded.add((day, session_id))
            # A day changed within the last second may change again within the same mtime tick.
            settled = time.time_ns() - mtime > SETTLE_NS
            self._days[day] = (mtime if settled else None, ids)
        for place, stamp in list(self._watched.items()):
            if place not in loaded and self._stamp(place) != stamp:
                self._load(place)
        return self._take_changes()

    def _stamp(self, place: Place) -> tuple[int, int, int] | None:
        """Only compared, never read through: the read itself goes through LocalFiles."""
        try:
            return stamp_of(os.stat(os.path.join(self.root, *place, SESSION_FILE), follow_symlinks=False))
        except OSError:
            return None

    def _drop(self, place: Place) -> None:
        self._watched.pop(place, None)
        self._put(place, None)

    def _load(self, place: Place) -> None:
        """Read a session's document; keep watching it while it may change."""
        files = LocalFiles.session(self.root, *place)
        stamp = None
        try:
            with files.open(SESSION_FILE) as f:
                stamp = stamp_of(os.fstat(f.fileno()))
                entry = _entry(reader.parse(f, files.where), files, place[1])
        except (OSError, RecordingError, ValueError) as exc:
            self._watched[place] = stamp
            if stamp is not None:  # a directory whose session.json is not written yet is no news
                log.warning("recording.unreadable", session=files.where, error=str(exc))
            self._put(place, None)
            return
        self._put(place, entry)
        if entry.summary.status == "active":
            self._watched[place] = stamp
        else:
            self._watched.pop(place, None)


def _days_ago(days: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() - days * 86400))


def _subdirectories(path: Path, wanted: Callable[[str], Any]) -> Iterable[str]:
    """Names of the real (not symlinked) directories in ``path`` that ``wanted`` accepts."""
    try:
        with os.scandir(path) as entries:
            return [e.name for e in entries if wanted(e.name) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


class S3Source(_Entries):
    """The sessions under ``prefix`` in ``bucket``."""

    def __init__(self, client: Callable[[], Any], bucket: str, prefix: str) -> None:
        super().__init__()
        self.client = client
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.where = f"s3://{bucket}/{self.prefix}"
        self._etags: dict[Place, str] = {}
        self._listed_at: float | None = None
        self._full_at: float | None = None

    def files(self, place: Place) -> S3Files:
        return S3Files(self.client, self.bucket, self.prefix, *place)

    def refresh(self) -> set[str]:
        now = time.monotonic()
        if self._listed_at is not None and now - self._listed_at < S3_REFRESH_S:
            return set()
        full = self._full_at is None or now - self._full_at >= S3_FULL_S
        recent = "" if full else _days_ago(S3_RECENT_DAYS)
        try:
            listed = dict(self._documents(self.prefix + recent if recent else ""))
        except RecordingError as exc:
            log.warning("recording.s3_list", error=str(exc))
            return set()
        self._listed_at = now
        if full:
            self._full_at = now
        for place in [p for p in self._etags if p[0] >= recent and p not in listed]:
            del self._etags[place]
            self._put(place, None)
        fresh = [place for place, etag in listed.items() if self._etags.get(place) != etag]
        if fresh:
            with ThreadPoolExecutor(S3_READERS, thread_name_prefix="sshgate-catalog") as pool:
                for place, entry in zip(fresh, pool.map(self._read, fresh), strict=True):
                    self._etags[place] = listed[place]
                    self._put(place, entry)
        return self._take_changes()

    def _documents(self, start_after: str) -> Iterable[tuple[Place, str]]:
        for key, etag in list_objects(self.client, self.bucket, self.prefix, start_after):
            parts = key[len(self.prefix) :].split("/")
            if len(parts) == 3 and parts[2] == SESSION_FILE:
                day, session_id = parts[0], parts[1]
                if DAY.fullmatch(day) and SESSION_ID.fullmatch(session_id):
                    yield (day, session_id), etag

    def _read(self, place: Place) -> Entry | None:
        files = self.files(place)
        try:
            return _entry(reader.load(files), files, place[1])
        except (RecordingError, ValueError) as exc:
            log.warning("recording.unreadable", session=files.where, error=str(exc))
            return None
