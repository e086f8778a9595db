"""``sshgate recordings ...`` over recordings in both layouts: the raw one of docs/recordings.md
and the asciicast one written before it (session.json version 1)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from sshgate.cli import main
from sshgate.recording.channels import Options
from sshgate.recording.local import FileRecorder
from sshgate.recording.manifest import load_signing_key
from tests.recording.helpers import META, cast_events, cast_text, cli, legacy_session, session_dir
from tests.recording.test_local import key_file, ssh_key


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["recordings", *argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def configured(tmp_path: Path) -> tuple[Path, str]:
    """A config naming a recording directory and a signing key; returns (recording dir, --config)."""
    key = key_file(tmp_path)
    rec_dir = tmp_path / "recordings"
    config = tmp_path / "sshgate.yaml"
    config.write_text(f"recording: {{dir: {rec_dir}, signing_key: {key}}}\n")
    return rec_dir, str(config)


async def record(
    rec_dir: Path, key: str | None, sessions: dict[str, list[tuple[str, Any]]], **meta: Any
) -> None:
    """One session per entry, each with one channel fed ``(call, argument)`` steps."""
    recorder = FileRecorder(rec_dir, Options(capture_input=True), load_signing_key(key) if key else None)
    for sid, steps in sessions.items():
        session = await recorder.start_session(sid, {**META, **meta})
        chan = session.open_channel("shell", {"pty": True, "term": "xterm", "size": [90, 20]})
        for call, argument in steps:
            getattr(chan, call)(*argument) if isinstance(argument, tuple) else getattr(chan, call)(argument)
        chan.close(0)
        await session.close()
    await recorder.aclose()


async def test_list_show_play_search_verify(
    configured: tuple[Path, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rec_dir, config = configured
    key = str(tmp_path / "signing_key")
    await record(
        rec_dir, key, {"s-one": [("output", b"\x1b[1mhi\x1b[0m from one, wo\x1b[31mrd\x1b[0m-x\r\n")]}
    )
    await record(rec_dir, key, {"s-two": [("output", b"hi from two\r\n")]}, resource="db-1")

    status, out, _ = run(capsys, "list", "--config", config, "--resource", "db-1")
    rows = out.splitlines()
    assert status == 0 and rows[0].split()[:3] == ["SESSION", "STARTED", "STATUS"] and len(rows) == 2
    assert rows[1].split()[:1] == ["s-two"] and "closed (client)" in rows[1]
    assert (
        len(
            run(capsys, "list", "--config", config, "--user", "ALICE", "--since", "2000-01-01")[
                1
            ].splitlines()
        )
        == 3
    )
    assert len(run(capsys, "list", "--config", config, "--user", "bob")[1].splitlines()) == 1

    status, shown, _ = run(capsys, "show", "s-one", "--config", config)
    assert status == 0 and "idp:formal:human:alice@corp.com" in shown and "web-1 (ssh) as ubuntu" in shown
    assert "1-shell.out 1-shell.in 1-shell.timing" in shown and "signed       yes" in shown

    assert cli("play", "s-one", "--channel", "1", "--speed", "50", "--config", config).stdout == (
        b"\x1b[1mhi\x1b[0m from one, wo\x1b[31mrd\x1b[0m-x\r\n"
    )

    status, found, _ = run(capsys, "search", "word-x", "--config", config)  # colours inside the word
    assert status == 0
    (line,) = found.splitlines()
    session_id, user, resource, started, text = line.split("\t")
    assert (session_id, user, resource, text) == ("s-one", "alice@corp.com", "web-1", "hi from one, word-x")
    assert started.endswith("Z")
    both = run(capsys, "search", "hi from", "--config", config)[1].splitlines()
    assert sorted(row.split("\t")[0] for row in both) == ["s-one", "s-two"]
    assert run(capsys, "search", "nowhere", "--config", config)[:2] == (1, "")

    status, out, _ = run(capsys, "verify", "s-one", "--config", config)
    assert status == 0 and out.startswith("OK s-one") and "the configured signing_key" in out
    out_file = session_dir(rec_dir, "s-one") / "1-shell.out"
    out_file.write_bytes(out_file.read_bytes().replace(b"from one", b"from 0ne"))
    status, out, _ = run(capsys, "verify", "s-one", "--config", config)
    assert (status, out) == (1, "FAILED 1-shell.out: changed (sha256 differs from the manifest)\n")

    assert run(capsys, "show", "nope", "--config", config)[::2] == (
        2,
        "sshgate: no recording nope in " + str(rec_dir) + "\n",
    )
    assert run(capsys, "export", "s-two", "--channel", "7", "--config", config)[2].startswith("sshgate: ")


async def test_verify_says_what_the_signature_proves(
    configured: tuple[Path, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rec_dir, config = configured
    key = str(tmp_path / "signing_key")
    await record(rec_dir, key, {"s-k": [("output", b"x")]})
    public = tmp_path / "key.pub"
    public.write_bytes(
        load_signing_key(key)
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    status, out, _ = run(capsys, "verify", "s-k", "--config", config, "--public-key", str(public))
    assert status == 0 and f"(--public-key {public})" in out and "SHA256:" in out

    bare = tmp_path / "bare.yaml"
    bare.write_text(f"recording: {{dir: {rec_dir}}}\n")
    status, out, _ = run(capsys, "verify", "s-k", "--config", str(bare))
    assert status == 0 and "proves the files are unchanged since signing, not who signed them" in out

    other_key = tmp_path / "other_key"
    ssh_key(other_key)  # a private key file names its public half too
    status, out, _ = run(capsys, "verify", "s-k", "--config", str(bare), "--public-key", str(other_key))
    assert status == 1 and "session.json: signed by another key" in out


def test_recordings_from_before_the_raw_layout(
    configured: tuple[Path, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rec_dir, config = configured
    directory = legacy_session(rec_dir, str(tmp_path / "signing_key"))
    status, shown, _ = run(capsys, "show", "s-legacy", "--config", config)
    assert status == 0 and "idp:formal:human:alice@corp.com" in shown and "1-shell.cast" in shown
    assert "127.0.0.1" in shown and "2026-11-30T10:00:00Z .. 2026-11-30T10:01:00Z" in shown
    assert "s-legacy" in run(capsys, "list", "--config", config)[1]
    played = cli("play", "s-legacy", "--speed", "100", "--config", config)
    assert played.stdout == "$ echo café\r\nlegacy-word \x1b[1mbold\x1b[0m\r\n".encode()
    exported = tmp_path / "legacy.cast"
    assert (
        run(capsys, "export", "s-legacy", "--channel", "1", "-o", str(exported), "--config", config)[0] == 0
    )
    assert exported.read_bytes() == (directory / "1-shell.cast").read_bytes()
    assert "legacy-word" in cast_text(exported)
    status, found, _ = run(capsys, "search", "legacy-word", "--config", config)
    assert found.split("\t")[0] == "s-legacy" and found.rstrip().endswith("legacy-word bold")
    assert run(capsys, "verify", "s-legacy", "--config", config)[0] == 0
    cast = directory / "1-shell.cast"
    cast.write_text(cast.read_text().replace("legacy-word", "changed-word"))
    assert run(capsys, "verify", "s-legacy", "--config", config)[1] == (
        "FAILED 1-shell.cast: changed (sha256 differs from the manifest)\n"
    )


async def test_export_keeps_resizes_input_and_odd_bytes(
    configured: tuple[Path, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rec_dir, config = configured
    binary = bytes(range(256)) * 4
    await record(rec_dir, None, {"s-odd": [
        ("input", b"ls\r"), ("output", b"caf\xc3"), ("output", b"\xa9 \xe2\x82"), ("output", b"\xac\r\n"),
        ("resize", (132, 43)), ("output", binary), ("output", b"\xf0\x9f"),
    ]})  # fmt: skip
    exported = tmp_path / "odd.cast"
    assert (
        run(capsys, "export", "s-odd", "--format", "asciicast", "-o", str(exported), "--config", config)[0]
        == 0
    )
    header, events = cast_events(exported)  # every line strict JSON
    assert (header["version"], header["width"], header["height"]) == (2, 90, 20)
    assert header["env"] == {"TERM": "xterm"} and header["title"] == "alice@corp.com on web-1 as ubuntu"
    assert ["i", "ls\r"] in [e[1:] for e in events] and ["r", "132x43"] in [e[1:] for e in events]
    output = "".join(e[2] for e in events if e[1] == "o")
    assert output == (b"caf\xc3\xa9 \xe2\x82\xac\r\n" + binary + b"\xf0\x9f").decode("utf-8", "replace")
    assert "café €" in output and output.endswith("\ufffd")  # a character cut short by the end
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(events))
    assert "café €" in cast_text(exported)
    to_stdout = cli("export", "s-odd", "--config", config)
    assert to_stdout.returncode == 0 and to_stdout.stdout == exported.read_bytes()


async def test_export_streams_in_flat_memory(configured: tuple[Path, str], tmp_path: Path) -> None:
    rec_dir, config = configured
    chunk = (b"line of output \x1b[32mgreen\x1b[0m \xff\r\n" * 2000)[:65536]
    await record(rec_dir, None, {"s-big": [("output", chunk)] * 2048})  # 128 MiB
    script = (
        "import resource, sys\nfrom sshgate.cli import main\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "status = main(sys.argv[1:])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, file=sys.stderr)\nsys.exit(status)\n"
    )
    out = tmp_path / "big.cast"
    done = subprocess.run(
        [sys.executable, "-c", script, "recordings", "export", "s-big", "-o", str(out), "--config", config],
        capture_output=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    grown_mb = int(done.stderr.split()[-1]) / 1024
    assert grown_mb < 32, grown_mb  # a few pieces in flight, not the 128 MiB
    with out.open("rb") as f:
        f.readline()
        total = sum(len(json.loads(line)[2].encode()) for line in f)
    assert total > 128 << 20


async def test_list_and_show_print_what_clients_chose_without_its_escape_sequences(
    configured: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # A command, a client version and a forward host are the client's: printed raw, their escape
    # sequences would act on the operator's terminal.
    rec_dir, config = configured
    recorder = FileRecorder(rec_dir, Options(), None)
    session = await recorder.start_session("s-esc", {**META, "client_version": "SSH-2.0-x\x1b]0;owned\x07"})
    chan = session.open_channel("exec", {"command": "true \x1b[2J\x1b[8mhidden", "pty": False})
    chan.close(0)
    await session.close()
    await recorder.aclose()
    for argv in (("show", "s-esc"), ("list",)):
        status, out, _ = run(capsys, *argv, "--config", config)
        assert status == 0 and "\x1b" not in out and "\x07" not in out
    status, out, _ = run(capsys, "show", "s-esc", "--config", config)
    assert "SSH-2.0-x\\x1b]0;owned\\x07" in out and "true \\x1b[2J\\x1b[8mhidden" in out


async def test_search_prints_no_control_character_a_session_printed(
    configured: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Escape sequences are removed from matches; 8-bit controls and bidi overrides are escaped.
    rec_dir, config = configured
    await record(rec_dir, None, {"s-c1": [("output", "needle \x9d2;retitled\x9c \u202egnp.exe\r\n".encode())]})
    status, out, _ = run(capsys, "search", "needle", "--config", config)
    assert status == 0 and "\x9d" not in out and "\u202e" not in out
    assert "needle \\x9d2;retitled\\x9c \\u202egnp.exe" in out
