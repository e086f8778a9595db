"""SSH keys bound to signed-in people, and their step-up times, kept in ``data_dir``.

One JSON file (0600 in a 0700 directory), replaced atomically under an exclusive lock, so the
gateway's workers and ``sshgate keys revoke`` can all change it. Readers notice a change by the
file's identity (inode, size, mtime): a login re-reads the file when it changed, so a revocation
refuses the very next login, and :meth:`BindingStore.watch` tells the gateway which bound keys
disappeared so it can close their connections. Nothing here is a secret: fingerprints,
identities, groups and times, never a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

FILE_NAME = "sso-bindings.json"
WATCH_INTERVAL_S = 0.25


@dataclass(frozen=True, slots=True)
class KeyBinding:
    fingerprint: str
    provider: str
    email: str
    groups: tuple[str, ...]
    signed_in_at: float
    expires_at: float

    @property
    def identity(self) -> str:
        return f"idp:{self.provider}:human:{self.email}"


@dataclass(slots=True)
class _Contents:
    bindings: dict[str, KeyBinding]
    step_ups: dict[str, float]


def _step_up_key(provider: str, email: str) -> str:
    return f"{provider}:{email}"


def _decode(text: str) -> _Contents:
    doc = json.loads(text) if text.strip() else {}
    bindings = {}
    for fingerprint, item in dict(doc.get("bindings", {})).items():
        bindings[fingerprint] = KeyBinding(
            fingerprint,
            str(item["provider"]),
            str(item["email"]),
            tuple(str(g) for g in item.get("groups", [])),
            float(item["signed_in_at"]),
            float(item["expires_at"]),
        )
    step_ups = {str(k): float(v) for k, v in dict(doc.get("step_ups", {})).items()}
    return _Contents(bindings, step_ups)


def _encode(contents: _Contents) -> str:
    bindings = {}
    for fingerprint, binding in sorted(contents.bindings.items()):
        item = asdict(binding)
        del item["fingerprint"]
        item["groups"] = list(binding.groups)
        bindings[fingerprint] = item
    return json.dumps({"version": 1, "bindings": bindings, "step_ups": contents.step_ups}, indent=1) + "\n"


class BindingStore:
    """The binding file of one ``data_dir``; cheap to consult on every login."""

    def __init__(self, data_dir: str | os.PathLike[str], clock: Callable[[], float] = time.time) -> None:
        self.dir = Path(data_dir)
        self.path = self.dir / FILE_NAME
        self._lock_path = self.dir / (FILE_NAME + ".lock")
        self._clock = clock
        self._stamp: tuple[int, int, int] | None = None
        self._contents = _Contents({}, {})

    # Reading

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def refresh(self) -> bool:
        """Re-read the file if it changed since the last read; True when it did."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        try:
            text = self.path.read_text(encoding="utf-8")
            contents = _decode(text)
        except FileNotFoundError:
            contents = _Contents({}, {})
        except (OSError, ValueError, KeyError, TypeError):
            # A file this process cannot read binds nothing (fail closed) until it is fixed.
            contents = _Contents({}, {})
        self._stamp, self._contents = stamp, contents
        return True

    def lookup(self, fingerprint: str) -> KeyBinding | None:
        """The live binding of a key, re-reading the file first if it changed."""
        self.refresh()
        binding = self._contents.bindings.get(fingerprint)
        if binding is None or binding.expires_at <= self._clock():
            return None
        return binding

    def bindings(self) -> list[KeyBinding]:
        self.refresh()
        now = self._clock()
        return sorted(
            (b for b in self._contents.bindings.values() if b.expires_at > now),
            key=lambda b: (b.email, b.fingerprint),
        )

    def step_up_at(self, provider: str, email: str) -> float | None:
        self.refresh()
        return self._contents.step_ups.get(_step_up_key(provider, email))

    # Writing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_Contents]:
        """Read-modify-write under an exclusive lock; the new file replaces the old atomically."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._stamp = None
            self.refresh()
            contents = self._contents
            now = self._clock()
            contents.bindings = {k: b for k, b in contents.bindings.items() if b.expires_at > now}
            yield contents
            self._write(contents)
        finally:
            os.close(fd)

    def _write(self, contents: _Contents) -> None:
        tmp = self.path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, _encode(contents).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._stamp = None
        self.refresh()

    def bind(self, binding: KeyBinding) -> None:
        with self._locked() as contents:
            contents.bindings[binding.fingerprint] = binding

    def record_step_up(self, provider: str, email: str, at: float) -> None:
        with self._locked() as contents:
            contents.step_ups[_step_up_key(provider, email)] = at

    def revoke(self, fingerprint: str | None = None, email: str | None = None) -> list[KeyBinding]:
        """End the bindings of one key, or of every key of one person; the ones removed."""
        with self._locked() as contents:
            gone = [
                b
                for b in contents.bindings.values()
                if b.fingerprint == fingerprint or (email is not None and b.email == email.lower())
            ]
            for binding in gone:
                del contents.bindings[binding.fingerprint]
            if email is not None:
                contents.step_ups = {
                    k: v for k, v in contents.step_ups.items() if k.split(":", 1)[1] != email.lower()
                }
        return gone

    async def watch(self, on_removed: Callable[[set[str]], None], stop: asyncio.Event) -> None:
        """Call ``on_removed`` with the fingerprints whose binding was revoked, within a poll
        interval. A binding that merely expired is not reported: its connections may finish."""
        self.refresh()
        known = self._contents.bindings
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_INTERVAL_S)
            self.refresh()  # logins refresh too; every re-read replaces the dict, so compare
            current = self._contents.bindings
            if current is known:
                continue
            now = self._clock()
            removed = {fp for fp, b in known.items() if fp not in current and b.expires_at > now}
            if removed:
                on_removed(removed)
            known = current
