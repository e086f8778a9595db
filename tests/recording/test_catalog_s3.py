"""The catalog and ``sshgate recordings`` with the S3 sink: sessions in S3 (moto server mode)
and those still in the local spool, listed, read, verified and cast alike."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sshgate.cli import main
from sshgate.config import load_config
from sshgate.recording import sources
from sshgate.recording.catalog import NotFound, SessionQuery, open_catalog
from tests.recording.conftest import Moto, moto_server
from tests.recording.helpers import legacy_session
from tests.recording.test_local import key_file
from tests.support.recordings import Fake, newest_first, write_session, write_sessions


def upload(moto: Moto, local: Path, prefix: str = "gw/") -> None:
    client = moto.client()
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client.put_object(
            Bucket="recs", Key=prefix + path.relative_to(local).as_posix(), Body=path.read_bytes()
        )


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    """One server for the module (starting one costs seconds); each test has its own bucket."""
    with moto_server() as server:
        yield server


@pytest.fixture
def setup(moto: Moto, tmp_path: Path) -> tuple[Path, str]:
    """S3 holds sessions 0..11 and an old cast recording; the spool holds 12 (not uploaded yet)
    and a newer copy of 11 (the spool wins: it is the fresher). Returns (spool, --config)."""
    client = moto.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="recs"):  # the last test's
        for item in page.get("Contents", []):
            client.delete_object(Bucket="recs", Key=item["Key"])
    staged = tmp_path / "staged"
    write_sessions(staged, 12, lambda f: f"s3 output {f.i}\r\n".encode())
    legacy_session(staged, key_file(tmp_path))
    upload(moto, staged)
    spool = tmp_path / "spool"
    write_session(spool, Fake(12), b"spooled output\r\n")
    copy = write_session(spool, Fake(11), b"s3 output 11\r\n")
    doc = json.loads((copy / "session.json").read_text())
    (copy / "session.json").write_text(json.dumps({**doc, "native_user": "from-spool"}))
    config = tmp_path / "sshgate.yaml"
    config.write_text(
        f"recording: {{sink: s3, dir: {spool}, s3: {{bucket: recs, prefix: gw}}}}\n"
        f"aws: {{region: us-east-1, endpoints: {{s3: '{moto.url}'}}}}\n"
    )
    return spool, str(config)


async def test_sessions_come_from_s3_and_the_spool(setup: tuple[Path, str], moto: Moto) -> None:
    _, config = setup
    catalog = open_catalog(load_config(config))
    found, cursor = await catalog.query(SessionQuery(limit=5))
    rest, end = await catalog.query(SessionQuery(limit=50, cursor=cursor))
    fakes = [f.id for f in newest_first([Fake(i) for i in range(13)])]
    assert [s.id for s in found + rest] == ["s-legacy", *fakes] and end is None  # it started on 11-30
    assert found[2].native_user == "from-spool"
    assert [s.id for s in (await catalog.query(SessionQuery(q="s3 output 7")))[0]] == ["s-000007"]
    assert [s.id for s in (await catalog.query(SessionQuery(q="spooled")))[0]] == ["s-000012"]

    doc = await catalog.document("s-000003")
    assert doc is not None and doc["resource"] == Fake(3).resource
    assert await catalog.verify("s-000003") == (
        True, "s-000003: every file matches its hash; unsigned, so nothing proves who wrote them",
    )  # fmt: skip
    cast = b"".join([p async for p in catalog.cast("s-000003", 1)])
    assert b'"o", "s3 output 3\\r\\n"]' in cast
    legacy = b"".join([p async for p in catalog.cast("s-legacy", 1)])
    assert b"legacy-word" in legacy
    spooled = b"".join([p async for p in catalog.cast("s-000012", 1)])
    assert b"spooled output" in spooled

    key = f"gw/{Fake(3).day}/s-000003/1-shell.out"
    body = moto.client().get_object(Bucket="recs", Key=key)["Body"].read()
    moto.client().put_object(Bucket="recs", Key=key, Body=body.replace(b"output", b"0utput"))
    moto.client().put_object(Bucket="recs", Key=f"gw/{Fake(3).day}/s-000003/extra", Body=b"x")
    ok, detail = await catalog.verify("s-000003")
    assert not ok and detail == (
        "1-shell.out: changed (sha256 differs from the manifest); extra: not in the manifest"
    )
    with pytest.raises(NotFound):
        await anext(catalog.cast("s-nope", 1))
    assert await catalog.document("../gw") is None


async def test_new_uploads_and_deletions_show_up(
    setup: tuple[Path, str], moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "S3_REFRESH_S", 0.0)
    monkeypatch.setattr(sources, "S3_FULL_S", 3600.0)
    _, config = setup
    catalog = open_catalog(load_config(config))
    assert len((await catalog.query(SessionQuery(limit=100)))[0]) == 14  # the first listing is whole
    today = time.strftime("%Y-%m-%d", time.gmtime())
    recent = write_session(tmp_path / "more", Fake(20))
    recent.rename(tmp_path / "more" / Fake(20).day / "s-today")
    doc = json.loads((tmp_path / "more" / Fake(20).day / "s-today" / "session.json").read_text())
    (tmp_path / "today" / today / "s-today").mkdir(parents=True)
    (tmp_path / "today" / today / "s-today" / "session.json").write_text(json.dumps({**doc, "id": "s-today"}))
    upload(moto, tmp_path / "today")
    write_session(tmp_path / "old", Fake(21))
    upload(moto, tmp_path / "old")
    moto.client().put_object(Bucket="recs", Key=f"gw/{Fake(0).day}/s-000000/session.json", Body=b"{bad")
    found = [s.id for s in (await catalog.query(SessionQuery(limit=100)))[0]]
    assert "s-today" in found and "s-000021" not in found  # between full listings: recent days only
    assert "s-000000" in found
    monkeypatch.setattr(sources, "S3_FULL_S", 0.0)
    found = [s.id for s in (await catalog.query(SessionQuery(limit=100)))[0]]
    assert "s-today" in found and "s-000021" in found and "s-000000" not in found and len(found) == 15


def test_the_cli_reads_s3(
    setup: tuple[Path, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _, config = setup
    assert main(["recordings", "list", "--config", config, "--resource", "web-1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "SESSION",
        "STARTED",
        "STATUS",
        "USER",
        "RESOURCE",
        "NATIVE",
        "USER",
        "CHANNELS",
    ]
    assert [line.split()[0] for line in out[1:]] == [
        "s-legacy",
        "s-000012",
        "s-000008",
        "s-000004",
        "s-000000",
    ]
    assert main(["recordings", "show", "s-000004", "--config", config]) == 0
    assert f"directory    s3://recs/gw/{Fake(4).day}/s-000004\n" in capsys.readouterr().out
    exported = tmp_path / "out.cast"
    assert main(["recordings", "export", "s-000004", "-o", str(exported), "--config", config]) == 0
    assert json.loads(exported.read_text().splitlines()[1])[1:] == ["o", "s3 output 4\r\n"]
    assert main(["recordings", "search", "s3 output 5", "--config", config]) == 0
    assert capsys.readouterr().out.startswith("s-000005\tcarol@corp.com\tweb-2\t")
