"""``sshgate recordings list | show | play | export | search | verify`` over the recordings
(docs/recordings.md): the local directory, or S3 and its spool with ``sink: s3``, through the
catalog; every command reads both layouts (reader.py)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from sshgate.config import ConfigError, config_path_from_env, load_config
from sshgate.recording import reader
from sshgate.recording.catalog import RecordingCatalog, open_catalog
from sshgate.recording.files import WrittenOnce
from sshgate.recording.manifest import load_public_key
from sshgate.recording.recorder import RecordingError
from sshgate.recording.sources import Entry
from sshgate.recording.summary import SessionQuery, matches, rfc3339
from sshgate.terminal_text import printable


def add_recording_commands(subparsers: Any) -> None:
    """Register ``recordings`` and its subcommands; each sets ``func(args) -> int``."""
    parser = subparsers.add_parser(
        "recordings", help="list, show, play, export, search and verify recordings"
    )
    commands = parser.add_subparsers(dest="recordings_command", required=True)

    def command(
        name: str, help_text: str, func: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
        sub.add_argument("--config", help="config file (default: $SSHGATE_CONFIG)")
        sub.set_defaults(func=_guard(func))
        return sub

    def filters(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--user", help="email, login or machine name")
        sub.add_argument("--resource")
        sub.add_argument("--since", help="YYYY-MM-DD (UTC)")

    filters(command("list", "sessions, newest first", _list))
    command("show", "a session's metadata and channels", _show).add_argument("id")
    play = command("play", "replay a terminal channel in this terminal with its timing", _play)
    play.add_argument("id")
    play.add_argument("--channel", type=int, help="channel number (default: the first terminal channel)")
    play.add_argument("--speed", type=float, default=1.0)
    export = command("export", "write a terminal channel as an asciicast v2 file", _export)
    export.add_argument("id")
    export.add_argument("--channel", type=int, help="channel number (default: the first terminal channel)")
    export.add_argument("--format", choices=["asciicast"], default="asciicast")
    export.add_argument("-o", "--output", help="file to write (default: stdout)")
    search = command("search", "lines of terminal output containing TEXT, one per match", _search)
    search.add_argument("text")
    filters(search)
    check = command("verify", "check every file's hash and the manifest's signature", _verify)
    check.add_argument("id")
    check.add_argument("--public-key", help="Ed25519 public key to check the signature against "
                       "(default: the configured signing_key's)")  # fmt: skip


def _catalog(args: argparse.Namespace) -> RecordingCatalog:
    return open_catalog(load_config(config_path_from_env(args.config)))


def _selected(catalog: RecordingCatalog, args: argparse.Namespace) -> Iterator[Entry]:
    since = None
    if args.since:
        try:
            since = datetime.datetime.strptime(args.since, "%Y-%m-%d").replace(tzinfo=datetime.UTC)
        except ValueError:
            raise RecordingError(f"--since {args.since!r}: not a YYYY-MM-DD date") from None
    query = SessionQuery(resource=args.resource, since=since)
    wanted = args.user.lower() if args.user else None
    for entry in catalog.newest_first():
        summary = entry.summary
        names = {summary.user, entry.login, summary.identity}
        if wanted and wanted not in {n.lower() for n in names if n}:
            continue
        if matches(summary, query):
            yield entry


def _say(line: str) -> None:
    """Print one line as :func:`printable` shows it: commands, client versions and forward hosts
    come from clients."""
    print(printable(line))


def _list(args: argparse.Namespace) -> int:
    rows = [("SESSION", "STARTED", "STATUS", "USER", "RESOURCE", "NATIVE USER", "CHANNELS")]
    for entry in _selected(_catalog(args), args):
        s = entry.summary
        kinds = ",".join(c.kind for c in s.channels)
        status = s.status + (f" ({entry.end_reason})" if entry.end_reason else "")
        rows.append((s.id, rfc3339(s.started), status, s.user, s.resource, s.native_user, kinds or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        _say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _show(args: argparse.Namespace) -> int:
    entry, doc = _catalog(args).load(args.id)
    _say(f"session      {doc.get('id')}  ({doc.get('status')}"
         + (f", {doc['end_reason']}" if doc.get("end_reason") else "") + ")")  # fmt: skip
    _say(f"directory    {entry.files.where}")
    _say(f"user         {doc.get('identity')}  groups {','.join(doc.get('groups') or []) or '-'}")
    _say(f"resource     {doc.get('resource')} ({doc.get('resource_type')}) as {doc.get('native_user')}")
    _say(f"client       {doc.get('client_ip')}  {doc.get('client_version')}  auth {doc.get('auth_method')}")
    _say(f"time         {doc.get('started')} .. {doc.get('ended') or 'now'}")
    for decision in doc.get("decisions", []):
        _say(
            f"decision     {decision.get('stage')}: {decision.get('action')}  {decision.get('reason') or ''}"
        )
    _say(f"signed       {'yes' if doc.get('signature') else 'no'}")
    for c in doc.get("channels", []):
        what = c.get("command") or c.get("subsystem") or (f"{c['host']}:{c['port']}" if "host" in c else "")
        exit_text = c.get("exit_signal") or c.get("exit_status")
        head = f"channel {c.get('n')!s:<4} {c.get('kind')!s:<8}"
        counts = f"in {c.get('bytes_in')!s:>10} out {c.get('bytes_out')!s:>10}"
        _say(f"{head} {counts}  exit {exit_text}  pty {bool(c.get('pty'))}  {what}")
        _say(f"             {' '.join(c.get('files') or [])}")
    return 0


def _play(args: argparse.Namespace) -> int:
    if args.speed <= 0:
        raise RecordingError("--speed must be positive")
    entry, doc = _catalog(args).load(args.id)
    channel = reader.terminal_channel(doc, args.channel)
    out = sys.stdout.buffer
    started = time.monotonic()
    for at, code, value in reader.events(entry.files, channel):
        if code != "o":
            continue
        delay = at / args.speed - (time.monotonic() - started)
        if delay > 0:
            out.flush()
            time.sleep(delay)
        out.write(value)
    out.flush()
    return 0


def _export(args: argparse.Namespace) -> int:
    pieces = _catalog(args).export(args.id, args.channel)
    with _output(args.output) as out:
        for piece in pieces:
            out.write(piece)
    return 0


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[BinaryIO | WrittenOnce]:
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with open(path, "wb") as f:
        yield WrittenOnce(f) if stat.S_ISREG(os.fstat(f.fileno()).st_mode) else f


def _search(args: argparse.Namespace) -> int:
    if not args.text:
        raise RecordingError("search needs a text to find")
    found = 0
    for entry in _selected(_catalog(args), args):
        s = entry.summary
        fields = (s.id, s.user, s.resource, rfc3339(s.started))
        prefix = "".join(printable(field) + "\t" for field in fields)
        try:
            doc = reader.load(entry.files)
        except RecordingError as exc:
            print(f"sshgate: {exc}", file=sys.stderr)
            continue
        for channel in doc.get("channels", []):
            if not reader.is_terminal(channel):
                continue
            try:
                for line in reader.output_lines(entry.files, channel, args.text):
                    # Escape sequences are gone, but not every control character (C1, bidi).
                    print(prefix + "\t".join(printable(part) for part in line.split("\t")))
                    found += 1
            except RecordingError as exc:
                print(f"sshgate: {exc}", file=sys.stderr)
    return 0 if found else 1


def _verify(args: argparse.Namespace) -> int:
    config = load_config(config_path_from_env(args.config))
    catalog = open_catalog(config)
    if args.public_key:
        trusted, source = load_public_key(args.public_key), f"--public-key {args.public_key}"
    elif catalog.trusted is not None:
        trusted, source = catalog.trusted, "the configured signing_key"
    else:
        trusted, source = None, ""
    ok, lines = catalog.check(args.id, trusted, source)
    for line in lines:
        print(f"OK {line}" if ok else f"FAILED {line}")
    return 0 if ok else 1


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Configuration and lookup errors become a message and exit status 2, not a traceback."""

    def guarded(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (ConfigError, RecordingError) as exc:
            print(f"sshgate: {exc}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # `... | head`
            return 0

    return guarded
