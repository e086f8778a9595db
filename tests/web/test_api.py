"""The real web app in-process, over a recordings directory and the gateway's in-memory shared
state: which channels stream and for whom, and how many searches a person runs (docs/api.md)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from sshgate.config import OidcConfig, Web
from sshgate.oidc.client import OidcClient
from sshgate.recording.catalog import RecordingCatalog, SessionQuery, SessionSummary
from sshgate.recording.sources import LocalSource
from sshgate.state.base import LiveSession, OutputChunk
from sshgate.state.local import LocalState
from sshgate.state.seal import Sealer
from sshgate.web import api
from sshgate.web.app import WebApp
from sshgate.web.roles import Principal
from sshgate.web.store import COOKIE
from tests.support.recordings import Fake, write_session

ACTIVE = Fake(49)  # an active session of bob's, with terminal channel 1
TRANSFER = {"n": 2, "kind": "exec", "command": "scp -f /etc/motd", "files": ["2-exec.jsonl"]}


class HeldSearches(RecordingCatalog):
    """The real catalog, whose output searches wait for ``go`` (set: they do not wait)."""

    def __init__(self, root: Path) -> None:
        super().__init__([LocalSource(root)])
        self.go = threading.Event()
        self.go.set()
        self.searching = threading.Semaphore(0)
        self.threads: set[str] = set()

    def page(self, query: SessionQuery) -> tuple[list[SessionSummary], str | None]:
        if query.q:
            self.threads.add(threading.current_thread().name)
            self.searching.release()
            self.go.wait(10)
        return super().page(query)


@dataclass
class Site:
    app: WebApp
    catalog: HeldSearches
    shared: LocalState
    url: str
    cookies: dict[str, str]  # by email

    def headers(self, email: str = "sec@corp.com") -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={self.cookies[email]}"}


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    directory = write_session(tmp_path / "recordings", ACTIVE, b"recorded\r\n")
    doc = json.loads((directory / "session.json").read_text())
    doc["channels"].append(TRANSFER)
    (directory / "session.json").write_text(json.dumps(doc))
    (directory / "2-exec.jsonl").write_text('{"op": "start"}\n')
    shared = LocalState(str(tmp_path / "state"))
    await shared.open_session(LiveSession(ACTIVE.id, "local", ACTIVE.user, ACTIVE.resource, time.time()), 10)
    catalog = HeldSearches(tmp_path / "recordings")
    app = WebApp(Web(listen="127.0.0.1:0", public_url="http://127.0.0.1", viewer_groups=["security"]),
                 catalog, shared, Sealer("a-web-test-key-of-32-characters-or-more"), lambda: None)  # fmt: skip
    await app.start()
    people = [Principal("sec@corp.com", ("security",), "viewer"), Principal(ACTIVE.user, (), "user")]
    cookies = {p.email: await app.store.open_session(p) for p in people}
    try:
        yield Site(app, catalog, shared, f"http://127.0.0.1:{app.port}", cookies)
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


async def test_one_output_search_at_a_time_per_person(site: Site) -> None:
    """A second search of one person's while the first runs: 429; another person's runs. Both on
    the catalog's search threads, never the default pool that new SSH sessions wait on."""
    search = f"{site.url}/api/v1/sessions?q=recorded"
    site.catalog.go.clear()
    async with aiohttp.ClientSession() as http:

        async def ask(email: str) -> int:
            async with http.get(search, headers=site.headers(email)) as answer:
                return answer.status

        first = asyncio.create_task(ask(ACTIVE.user))
        assert await asyncio.to_thread(site.catalog.searching.acquire, timeout=5)
        async with http.get(search, headers=site.headers(ACTIVE.user)) as answer:
            assert answer.status == 429
            assert "still running" in (await answer.json())["error"]
        other = asyncio.create_task(ask("sec@corp.com"))
        assert await asyncio.to_thread(site.catalog.searching.acquire, timeout=5)
        site.catalog.go.set()
        assert [await first, await other] == [200, 200]
        assert await ask(ACTIVE.user) == 200  # the first one answered: free again
    assert site.catalog.threads and all(name.startswith("sshgate-search") for name in site.catalog.threads)


async def test_streamed_answers_carry_the_security_headers(site: Site) -> None:
    async with aiohttp.ClientSession(headers=site.headers()) as http:
        for route in ("cast", "live"):
            async with http.get(f"{site.url}/api/v1/sessions/{ACTIVE.id}/channels/1/{route}") as answer:
                assert answer.status == 200
                assert answer.headers["X-Content-Type-Options"] == "nosniff", route
                assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"], route


async def test_a_live_stream_ends_once_its_watcher_signed_out_while_output_flows(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "LIVE_CHECK_S", 0.2)

    async def flowing() -> None:  # never a pause as long as a check takes
        for i in range(200):
            site.shared.publish_output(ACTIVE.id, OutputChunk(1, float(i), b"tick\r\n"))
            await asyncio.sleep(0.05)

    async with aiohttp.ClientSession(headers=site.headers()) as http, http.get(live_url(site, 1)) as answer:
        await asyncio.sleep(0.1)  # subscribed
        output = asyncio.create_task(flowing())
        assert b"tick" in await asyncio.wait_for(answer.content.readline(), 5)
        await site.app.store.close_session(site.cookies["sec@corp.com"])
        lines = []
        async with asyncio.timeout(3):  # until the server ends the stream
            while line := await answer.content.readline():
                lines.append(line)
        output.cancel()
    assert lines[-3:] == [b"event: end\n", b"data: {}\n", b"\n"], lines[-5:]


async def test_a_client_leaving_a_cast_download_logs_no_error(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    long = write_session(tmp_path / "recordings", Fake(48), b"0123456789abcdef\r\n" * 500_000)
    url = f"{site.url}/api/v1/sessions/{long.name}/channels/1/cast"
    async with aiohttp.ClientSession(headers=site.headers()) as http:
        for _ in range(3):
            async with http.get(url) as answer:  # left at once, unread
                assert answer.status == 200
        await asyncio.sleep(0.5)
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


async def test_an_unreachable_provider_is_not_described_to_whoever_starts_a_sign_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    oidc = OidcClient(OidcConfig(name="okta", issuer="http://127.0.0.1:1/realms/inside", client_id="sshgate"))
    app = WebApp(Web(listen="127.0.0.1:0", public_url="http://127.0.0.1"),
                 RecordingCatalog([LocalSource(tmp_path)]), LocalState(str(tmp_path)),
                 Sealer("a-web-test-key-of-32-characters-or-more"), lambda: oidc)  # fmt: skip
    await app.start()
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{app.port}/signin") as answer:
            assert answer.status == 503
            assert await answer.text() == "the identity provider is unavailable; try again later\n"
    finally:
        await app.stop()
        await oidc.aclose()
    assert "127.0.0.1:1/realms/inside" in capsys.readouterr().out  # the detail is in the log
