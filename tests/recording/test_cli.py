from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sshgate.recording.cli import add_recording_commands
from sshgate.recording.local import FileRecorder
from sshgate.recording.manifest import load_signing_key
from tests.recording.helpers import META, session_dir
from tests.recording.test_local import _key_file


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_recording_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["recordings", *argv])
    result: int = args.func(args)
    return result


async def test_list_show_play_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = _key_file(tmp_path)
    rec_dir = tmp_path / "recordings"
    config = tmp_path / "sshgate.yaml"
    config.write_text(f"recording: {{dir: {rec_dir}, signing_key: {key_file}}}\n")
    recorder = FileRecorder(rec_dir, signing_key=load_signing_key(key_file))
    for sid, resource in (("s-one", "web-1"), ("s-two", "db-1")):
        session = await recorder.start_session(sid, {**META, "resource": resource})
        chan = session.open_channel("exec", {"command": "echo hi", "pty": False})
        chan.output(b"hi from " + sid.encode() + b"\n")
        chan.close(0)
        await session.close()
    await recorder.aclose()

    assert cli("list", "--config", str(config), "--resource", "db-1") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["SESSION", "STARTED", "STATUS"] and len(out) == 2 and "s-two" in out[1]
    assert cli("list", "--config", str(config), "--user", "ALICE", "--since", "2000-01-01") == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert cli("list", "--config", str(config), "--user", "bob") == 0
    assert len(capsys.readouterr().out.splitlines()) == 1

    assert cli("show", "s-one", "--config", str(config)) == 0
    shown = capsys.readouterr().out
    assert "alice@corp.com" in shown and "web-1 (ssh) as ubuntu" in shown and "1-exec.cast" in shown
    assert "echo hi" in shown and "signed       yes" in shown

    assert cli("play", "s-one", "--channel", "1", "--speed", "50", "--config", str(config)) == 0
    assert capsys.readouterr().out == "hi from s-one\n"

    assert cli("verify", "s-one", "--config", str(config)) == 0
    assert capsys.readouterr().out.startswith("OK s-one")
    cast = session_dir(rec_dir, "s-one") / "1-exec.cast"
    cast.write_bytes(cast.read_bytes().replace(b"hi from", b"hI from"))
    assert cli("verify", "s-one", "--config", str(config)) == 1
    assert capsys.readouterr().out == "FAILED 1-exec.cast: changed (sha256 differs from the manifest)\n"

    assert cli("show", "nope", "--config", str(config)) == 2
    assert "no recording nope" in capsys.readouterr().err
