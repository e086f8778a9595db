"""The streamed routes (cast, live) of the real web app in-process, over a recordings directory
and the gateway's in-memory shared state: which channels stream, and for whom (docs/api.md)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from sshgate.config import Web
from sshgate.recording.catalog import RecordingCatalog
from sshgate.recording.sources import LocalSource
from sshgate.state.base import LiveSession, OutputChunk
from sshgate.state.local import LocalState
from sshgate.state.seal import Sealer
from sshgate.web.app import WebApp
from sshgate.web.roles import Principal
from sshgate.web.store import COOKIE
from tests.support.recordings import Fake, write_session

ACTIVE = Fake(49)  # an active session of bob's, with terminal channel 1
TRANSFER = {"n": 2, "kind": "exec", "command": "scp -f /etc/motd", "files": ["2-exec.jsonl"]}


@dataclass
class Site:
    app: WebApp
    shared: LocalState
    url: str
    cookie: str
    csrf: str

    def headers(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={self.cookie}"}


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    directory = write_session(tmp_path / "recordings", ACTIVE, b"recorded\r\n")
    doc = json.loads((directory / "session.json").read_text())
    doc["channels"].append(TRANSFER)
    (directory / "session.json").write_text(json.dumps(doc))
    (directory / "2-exec.jsonl").write_text('{"op": "start"}\n')
    shared = LocalState(str(tmp_path / "state"))
    await shared.open_session(LiveSession(ACTIVE.id, "local", ACTIVE.user, ACTIVE.resource, time.time()), 10)
    app = WebApp(Web(listen="127.0.0.1:0", public_url="http://127.0.0.1", viewer_groups=["security"]),
                 RecordingCatalog([LocalSource(tmp_path / "recordings")]), shared,
                 Sealer("a-web-test-key-of-32-characters-or-more"), lambda: None)  # fmt: skip
    await app.start()
    cookie = await app.store.open_session(Principal("sec@corp.com", ("security",), "viewer"))
    principal = await app.store.session(cookie)
    assert principal is not None and principal.csrf is not None
    try:
        yield Site(app, shared, f"http://127.0.0.1:{app.port}", cookie, principal.csrf)
    finally:
        await app.stop()


def live_url(site: Site, n: object) -> str:
    return f"{site.url}/api/v1/sessions/{ACTIVE.id}/channels/{n}/live"


async def test_live_streams_a_terminal_channel_only(site: Site) -> None:
    async with aiohttp.ClientSession(headers=site.headers()) as http:
        for n in (2, 9, 0):  # a transfer, and channels the session does not have
            async with http.get(live_url(site, n)) as answer:
                assert answer.status == 404, n
                assert await answer.json() == {"error": "no such terminal channel"}
        async with http.get(live_url(site, 1)) as answer:
            assert answer.status == 200
            await asyncio.sleep(0.1)  # subscribed
            site.shared.publish_output(ACTIVE.id, OutputChunk(1, 0.5, b"typed\r\n"))
            line = await asyncio.wait_for(answer.content.readline(), 5)
            assert line == b'data: [0.5,"o","typed\\r\\n"]\n'
