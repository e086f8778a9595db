"""The S3 sink against moto's server mode, including an outage in the middle of a session."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sshgate.config import Config
from sshgate.recording.build import build_recorder
from sshgate.recording.local import FileRecorder
from sshgate.recording.manifest import verify
from tests.recording.conftest import Moto
from tests.recording.helpers import META, payload, scriptreplay


def recorder_for(moto: Moto, spool: Path) -> FileRecorder:
    config = Config.model_validate(
        {
            "recording": {"sink": "s3", "dir": str(spool), "s3": {"bucket": "recs", "prefix": "gw"}},
            "aws": {"region": "us-east-1", "endpoints": {"s3": moto.url}},
        }
    )
    recorder = build_recorder(config)
    assert recorder.sink is not None
    recorder.sink._backoff = (0.1, 0.5)
    return recorder


async def test_outage_mid_session_then_the_recording_arrives_complete(moto: Moto, tmp_path: Path) -> None:
    recorder = recorder_for(moto, tmp_path / "spool")
    await recorder.start()
    session = await recorder.start_session("s-s3", META)
    shell = session.open_channel("shell", {"pty": True, "term": "xterm", "size": [80, 24]})
    shell.output(b"before the outage\r\n")
    big = b"0123456789abcdef" * 4096  # 64 KiB per chunk, 9 MiB in all: a multipart upload
    await asyncio.to_thread(moto.stop)
    for _ in range(144):
        shell.output(big)
    shell.output(b"during the outage\r\n")
    shell.close(0)
    await session.close()
    await asyncio.sleep(0.5)  # some uploads fail and back off meanwhile
    await asyncio.to_thread(moto.start)
    assert recorder.sink is not None
    await asyncio.wait_for(recorder.sink.drain(), 30)
    await recorder.aclose()

    objects = moto.objects()
    prefix = next(iter(objects)).rsplit("/", 1)[0]
    assert prefix.startswith("gw/") and prefix.endswith("/s-s3")
    assert sorted(objects) == [f"{prefix}/1-shell.out", f"{prefix}/1-shell.timing", f"{prefix}/session.json"]
    directory = tmp_path / "downloaded"
    directory.mkdir()
    for key, body in objects.items():
        (directory / key.rsplit("/", 1)[1]).write_bytes(body)
    assert (
        payload(directory / "1-shell.out") == b"before the outage\r\n" + big * 144 + b"during the outage\r\n"
    )
    assert scriptreplay(directory, "1-shell").endswith(b"during the outage\r\n\n")
    doc = json.loads(objects[f"{prefix}/session.json"])
    assert doc["status"] == "closed" and verify(directory, None) == []
    assert not list((tmp_path / "spool").glob("[0-9]*/*"))  # the spool is emptied


async def test_leftovers_upload_at_the_next_start(moto: Moto, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    await asyncio.to_thread(moto.stop)
    first = recorder_for(moto, spool)
    assert first.sink is not None
    first.sink._drain_timeout = 0.2
    session = await first.start_session("s-left", META)
    session.open_channel("forward", {"host": "db", "port": 5432}).close()
    await session.close()
    await first.aclose()  # S3 still away: the files stay in the spool
    assert len(list(spool.glob("[0-9]*/s-left/*"))) == 2

    await asyncio.to_thread(moto.start)
    second = recorder_for(moto, spool)
    await second.start()
    assert second.sink is not None
    await asyncio.wait_for(second.sink.drain(), 30)
    await second.aclose()
    assert sorted(k.rsplit("/", 1)[1] for k in moto.objects()) == ["1-forward.jsonl", "session.json"]
    assert not list(spool.glob("[0-9]*/*"))
