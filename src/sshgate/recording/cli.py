"""``sshgate recordings list | show | play | export | search | verify`` over the recording
directory (docs/recordings.md); every command reads both layouts (reader.py)."""

from __future__ import annotations

import argparse
import codecs
import contextlib
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from sshgate.config import ConfigError, config_path_from_env, load_config
from sshgate.recording import asciicast, reader
from sshgate.recording.files import WrittenOnce
from sshgate.recording.manifest import (
    fingerprint,
    load_public_key,
    load_signing_key,
    verify,
)
from sshgate.recording.recorder import RecordingError
from sshgate.recording.search import LineMatcher


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


def _root(args: argparse.Namespace) -> tuple[Path, str | None]:
    config = load_config(config_path_from_env(args.config))
    return config.recording_dir, config.recording.signing_key


def _selected(root: Path, args: argparse.Namespace) -> Iterator[tuple[Path, dict[str, Any]]]:
    for directory, doc in reader.sessions(root):
        names = {doc.get("user"), doc.get("login"), doc.get("identity")}
        if args.user and args.user.lower() not in {str(n).lower() for n in names if n}:
            continue
        if args.resource and doc.get("resource") != args.resource:
            continue
        if args.since and directory.parent.name < args.since:
            continue
        yield directory, doc


def _list(args: argparse.Namespace) -> int:
    root, _ = _root(args)
    rows = [("SESSION", "STARTED", "STATUS", "USER", "RESOURCE", "NATIVE USER", "CHANNELS")]
    for _, doc in _selected(root, args):
        kinds = ",".join(str(c.get("kind")) for c in doc.get("channels", []))
        status = str(doc.get("status")) + (f" ({doc['end_reason']})" if doc.get("end_reason") else "")
        rows.append((str(doc.get("id")), str(doc.get("started")), status, str(doc.get("user")),
                     str(doc.get("resource")), str(doc.get("native_user")), kinds or "-"))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _show(args: argparse.Namespace) -> int:
    root, _ = _root(args)
    directory = reader.find(root, args.id)
    doc = reader.load(directory)
    print(f"session      {doc.get('id')}  ({doc.get('status')}"
          + (f", {doc['end_reason']}" if doc.get("end_reason") else "") + ")")  # fmt: skip
    print(f"directory    {directory}")
    print(f"user         {doc.get('identity')}  groups {','.join(doc.get('groups') or []) or '-'}")
    print(f"resource     {doc.get('resource')} ({doc.get('resource_type')}) as {doc.get('native_user')}")
    print(f"client       {doc.get('client_ip')}  {doc.get('client_version')}  auth {doc.get('auth_method')}")
    print(f"time         {doc.get('started')} .. {doc.get('ended') or 'now'}")
    for decision in doc.get("decisions", []):
        print(
            f"decision     {decision.get('stage')}: {decision.get('action')}  {decision.get('reason') or ''}"
        )
    print(f"signed       {'yes' if doc.get('signature') else 'no'}")
    for c in doc.get("channels", []):
        what = c.get("command") or c.get("subsystem") or (f"{c['host']}:{c['port']}" if "host" in c else "")
        exit_text = c.get("exit_signal") or c.get("exit_status")
        head = f"channel {c.get('n')!s:<4} {c.get('kind')!s:<8}"
        counts = f"in {c.get('bytes_in')!s:>10} out {c.get('bytes_out')!s:>10}"
        print(f"{head} {counts}  exit {exit_text}  pty {bool(c.get('pty'))}  {what}")
        print(f"             {' '.join(c.get('files') or [])}")
    return 0


def _channel(args: argparse.Namespace) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    root, _ = _root(args)
    directory = reader.find(root, args.id)
    doc = reader.load(directory)
    return directory, doc, reader.terminal_channel(doc, args.channel)


def _play(args: argparse.Namespace) -> int:
    if args.speed <= 0:
        raise RecordingError("--speed must be positive")
    directory, _, channel = _channel(args)
    out = sys.stdout.buffer
    started = time.monotonic()
    for at, code, value in reader.events(directory, channel):
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
    directory, doc, channel = _channel(args)
    with _output(args.output) as out:
        cast = reader.legacy_cast(directory, channel)
        if cast is not None:  # already asciicast v2
            with cast.open("rb") as f:
                while piece := f.read(1 << 20):
                    out.write(piece)
        else:
            head = asciicast.header(doc, channel, reader.opened_unix(channel))
            asciicast.write(out, head, reader.events(directory, channel))
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
    root, _ = _root(args)
    found = 0
    for directory, doc in _selected(root, args):
        prefix = f"{doc.get('id')}\t{doc.get('user')}\t{doc.get('resource')}\t{doc.get('started')}\t"
        for channel in doc.get("channels", []):
            if not reader.is_terminal(channel):
                continue
            matcher = LineMatcher(args.text)
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            try:
                for _, code, value in reader.events(directory, channel):
                    if code == "o":
                        for line in matcher.feed(decoder.decode(value)):
                            print(prefix + line)
                            found += 1
            except RecordingError as exc:
                print(f"sshgate: {exc}", file=sys.stderr)
            for line in matcher.feed(decoder.decode(b"", final=True)) + matcher.end():
                print(prefix + line)
                found += 1
    return 0 if found else 1


def _verify(args: argparse.Namespace) -> int:
    root, key_path = _root(args)
    directory = reader.find(root, args.id)
    if args.public_key:
        trusted, source = load_public_key(args.public_key), f"--public-key {args.public_key}"
    elif key_path:
        trusted, source = load_signing_key(key_path).public_key(), "the configured signing_key"
    else:
        trusted, source = None, ""
    problems = verify(directory, trusted)
    for problem in problems:
        print(f"FAILED {problem}")
    if problems:
        return 1
    signature = reader.load(directory).get("signature")
    if signature is None:
        print(f"OK {args.id}: every file matches its hash; unsigned, so nothing proves who wrote them")
    elif trusted is not None:
        print(f"OK {args.id}: every file matches its hash; signed by {fingerprint(trusted)} ({source})")
    else:
        print(f"OK {args.id}: every file matches its hash; the signature matches the key carried in the "
              "manifest, which proves the files are unchanged since signing, not who signed them "
              "(configure recording.signing_key or pass --public-key to check the origin)")  # fmt: skip
    return 0


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
