"""``sshgate recordings list | show ID | play ID | verify ID`` over the recording directory."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sshgate.config import ConfigError, config_path_from_env, load_config
from sshgate.recording.manifest import SESSION_FILE, load_signing_key, verify
from sshgate.recording.recorder import RecordingError


def add_recording_commands(subparsers: Any) -> None:
    """Register ``recordings`` and its subcommands; each sets ``func(args) -> int``."""
    parser = subparsers.add_parser("recordings", help="list, show, play and verify session recordings")
    commands = parser.add_subparsers(dest="recordings_command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
        sub.add_argument("--config", help="config file (default: $SSHGATE_CONFIG)")
        return sub

    listing = command("list", "sessions, newest first")
    listing.add_argument("--user", help="email, login or machine name")
    listing.add_argument("--resource")
    listing.add_argument("--since", help="YYYY-MM-DD (UTC)")
    listing.set_defaults(func=_guard(_list))
    show = command("show", "a session's metadata and channels")
    show.add_argument("id")
    show.set_defaults(func=_guard(_show))
    play = command("play", "replay a cast in this terminal with its timing")
    play.add_argument("id")
    play.add_argument("--channel", type=int, help="channel number (default: the first cast)")
    play.add_argument("--speed", type=float, default=1.0)
    play.set_defaults(func=_guard(_play))
    check = command("verify", "check file hashes and the signature")
    check.add_argument("id")
    check.set_defaults(func=_guard(_verify))


def _root(args: argparse.Namespace) -> tuple[Path, str | None]:
    config = load_config(config_path_from_env(args.config))
    return config.recording_dir, config.recording.signing_key


def _docs(root: Path) -> list[dict[str, Any]]:
    docs = []
    for path in root.glob(f"[0-9]*/*/{SESSION_FILE}"):
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc["_dir"] = path.parent
        docs.append(doc)
    return sorted(docs, key=lambda d: str(d.get("started_at")), reverse=True)


def _find(root: Path, session_id: str) -> Path:
    found = [p for p in root.glob(f"[0-9]*/{session_id}") if (p / SESSION_FILE).is_file()]
    if not found:
        raise RecordingError(f"no recording {session_id} in {root}")
    return found[0]


def _who(doc: dict[str, Any]) -> str:
    user = doc.get("user") or {}
    return str(user.get("email") or user.get("name") or "?")


def _list(args: argparse.Namespace) -> int:
    root, _ = _root(args)
    rows = [("SESSION", "STARTED", "STATUS", "USER", "RESOURCE", "NATIVE USER", "CHANNELS")]
    for doc in _docs(root):
        user = doc.get("user") or {}
        names = {user.get("email"), user.get("name"), user.get("login")}
        if args.user and args.user.lower() not in {str(n).lower() for n in names if n}:
            continue
        if args.resource and doc.get("resource") != args.resource:
            continue
        if args.since and doc["_dir"].parent.name < args.since:
            continue
        kinds = ",".join(c["kind"] for c in doc.get("channels", []))
        rows.append(
            (
                doc["session_id"],
                doc["started_at"],
                doc["status"],
                _who(doc),
                str(doc.get("resource")),
                str(doc.get("native_user")),
                kinds or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _show(args: argparse.Namespace) -> int:
    root, _ = _root(args)
    directory = _find(root, args.id)
    doc = json.loads((directory / SESSION_FILE).read_text(encoding="utf-8"))
    client = doc.get("client") or {}
    print(f"session      {doc['session_id']}  ({doc['status']})")
    print(f"directory    {directory}")
    print(f"user         {_who(doc)}  groups {','.join((doc.get('user') or {}).get('groups') or []) or '-'}")
    print(f"resource     {doc.get('resource')} ({doc.get('resource_type')}) as {doc.get('native_user')}")
    print(f"client       {client.get('ip')}  {client.get('version')}  auth {doc.get('auth_method')}")
    print(f"time         {doc.get('started_at')} .. {doc.get('ended_at') or 'now'}")
    for decision in doc.get("decisions", []):
        print(
            f"decision     {decision.get('stage')}: {decision.get('action')}  {decision.get('reason') or ''}"
        )
    print(f"signed       {'yes' if doc.get('signature') else 'no'}")
    for c in doc.get("channels", []):
        what = c.get("command") or c.get("subsystem") or (f"{c['host']}:{c['port']}" if "host" in c else "")
        exit_text = c.get("exit_signal") or c.get("exit_status")
        print(
            f"channel {c['n']:<4} {c['kind']:<8} {c['file']:<18} "
            f"in {c['bytes_in']:>10} out {c['bytes_out']:>10}  "
            f"exit {exit_text}  pty {bool(c.get('pty'))}  {what}"
        )
    return 0


def _play(args: argparse.Namespace) -> int:
    root, _ = _root(args)
    directory = _find(root, args.id)
    casts = sorted(directory.glob("*.cast"), key=lambda p: int(p.name.split("-")[0]))
    if args.channel is not None:
        casts = [p for p in casts if p.name.split("-")[0] == str(args.channel)]
    if not casts:
        raise RecordingError(f"{args.id}: no cast" + (f" for channel {args.channel}" if args.channel else ""))
    if args.speed <= 0:
        raise RecordingError("--speed must be positive")
    out = sys.stdout
    started = time.monotonic()
    with casts[0].open(encoding="utf-8") as f:
        f.readline()
        for line in f:
            at, code, data = json.loads(line)
            if code != "o":
                continue
            delay = at / args.speed - (time.monotonic() - started)
            if delay > 0:
                out.flush()
                time.sleep(delay)
            out.write(data)
    out.flush()
    return 0


def _verify(args: argparse.Namespace) -> int:
    root, key_path = _root(args)
    directory = _find(root, args.id)
    trusted = load_signing_key(key_path).public_key() if key_path else None
    problems = verify(directory, trusted)
    for problem in problems:
        print(f"FAILED {problem}")
    if not problems:
        signed = json.loads((directory / SESSION_FILE).read_text(encoding="utf-8")).get("signature")
        print(
            f"OK {args.id}: every file matches its hash" + (", signature valid" if signed else " (unsigned)")
        )
    return 1 if problems else 0


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Configuration and lookup errors become a message and exit status 2, not a traceback."""

    def guarded(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (ConfigError, RecordingError) as exc:
            print(f"sshgate: {exc}", file=sys.stderr)
            return 2

    return guarded
