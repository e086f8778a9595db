"""The web app on two replicas sharing a real redis-server, no sticky sessions (docs/api.md,
"Sign-in"): a browser's cookie, a sign-in in flight and a one-time link are the gateway's, not
one replica's. Two web apps in this process, each with its own replica state, driven over HTTP;
the code flow goes through the real test provider."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sshgate.config import OidcConfig, Web
from sshgate.oidc.client import OidcClient
from sshgate.recording.catalog import RecordingCatalog
from sshgate.recording.sources import LocalSource
from sshgate.state.redis_store import as_text
from sshgate.state.seal import Sealer
from sshgate.web.app import WebApp
from sshgate.web.store import COOKIE, record_key
from tests.state.conftest import HMAC_KEY, Replica
from tests.support.net import free_port
from tests.support.oidc import CLIENT_SECRET, OidcProvider, Person
from tests.support.redis import RedisServer

EMAIL = "sec@corp.com"


@dataclass
class Pair:
    a: WebApp
    b: WebApp
    replicas: tuple[Replica, Replica]
    public_url: str  # the load balancer's name: the provider sends the callback there (to B)
    http: aiohttp.ClientSession

    def url(self, app: WebApp, path: str) -> str:
        return f"http://127.0.0.1:{app.port}{path}"

    async def get(self, app: WebApp, path: str, **cookies: str) -> aiohttp.ClientResponse:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}
        async with self.http.get(self.url(app, path), headers=headers, allow_redirects=False) as answer:
            await answer.read()
            return answer

    async def me(self, app: WebApp, cookie: str) -> tuple[int, Any]:
        async with self.http.get(
            self.url(app, "/api/v1/me"), headers={"Cookie": f"{COOKIE}={cookie}"}
        ) as answer:
            return answer.status, await answer.json() if answer.status == 200 else await answer.text()


async def start_pair(redis_server: RedisServer, tmp_path: Path, issuer: str | None, b_port: int = 0) -> Pair:
    redis_server.cli("FLUSHALL")
    public_url = f"http://127.0.0.1:{b_port}"
    oidc = None
    if issuer is not None:
        config = OidcConfig(name="okta", issuer=issuer, client_id="sshgate", client_secret=CLIENT_SECRET,
                            allowed_domains=["corp.com"])  # fmt: skip
        oidc = OidcClient(config)
    replicas = (await Replica(redis_server.url).start(), await Replica(redis_server.url).start())
    apps = []
    for port, replica in zip((0, b_port), replicas, strict=True):
        web = Web(listen=f"127.0.0.1:{port}", public_url=public_url, viewer_groups=["security"])
        catalog = RecordingCatalog([LocalSource(tmp_path / "recordings")])
        app = WebApp(web, catalog, replica.state, Sealer(HMAC_KEY), lambda: oidc)
        await app.start()
        apps.append(app)
    return Pair(apps[0], apps[1], replicas, public_url, aiohttp.ClientSession())


async def stop_pair(pair: Pair) -> None:
    await pair.http.close()
    for app in (pair.a, pair.b):
        await app.stop()
    for replica in pair.replicas:
        await replica.state.aclose()


@pytest.fixture
async def pair(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Pair]:
    """Two replicas' web apps without a provider (one-time links sign in)."""
    started = await start_pair(redis_server, tmp_path, None)
    yield started
    await stop_pair(started)


@pytest.fixture
async def signin_pair(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Pair]:
    """Two replicas' web apps and the provider; its redirect URI (the balancer) reaches B."""
    b_port = free_port()
    provider = OidcProvider(web_redirect=f"http://127.0.0.1:{b_port}/signin/callback")
    try:
        started = await start_pair(redis_server, tmp_path, provider.issuer, b_port)
        yield started
        await stop_pair(started)
    finally:
        provider.stop()


def path_of(link: str) -> str:
    """A one-time link's path and query: sent to either replica, as a balancer would."""
    parsed = urllib.parse.urlparse(link)
    return f"{parsed.path}?{parsed.query}"


def session_cookie(answer: aiohttp.ClientResponse) -> str:
    morsel = answer.cookies.get(COOKIE)
    assert morsel is not None and morsel.value, answer.headers
    return morsel.value


async def test_a_sign_in_started_on_a_completes_on_b_and_the_cookie_works_on_both(signin_pair: Pair) -> None:
    pair = signin_pair
    started = await pair.get(pair.a, "/signin?next=/sessions/x")
    assert started.status == 302
    state_cookie = started.cookies["sshgate_signin"].value
    callback = await asyncio.to_thread(
        Person(EMAIL).authorize, started.headers["Location"], pair.public_url + "/signin/callback"
    )
    query = urllib.parse.parse_qs(urllib.parse.urlparse(callback).query)
    assert query["state"] != [state_cookie]  # the cookie's secret never travels in a URL
    # The load balancer sends the callback to B, which never saw the sign-in start.
    done = await pair.get(pair.b, "/signin/callback?" + urllib.parse.urlparse(callback).query,
                          sshgate_signin=state_cookie)  # fmt: skip
    assert done.status == 302 and done.headers["Location"] == "/sessions/x"
    cookie = session_cookie(done)
    on_a, on_b = await pair.me(pair.a, cookie), await pair.me(pair.b, cookie)
    assert on_a[0] == 200 and on_a == on_b and on_a[1]["email"] == EMAIL and on_a[1]["role"] == "viewer"
    # The sign-in's state is spent: replaying the callback on A signs nobody in.
    again = await pair.get(pair.a, "/signin/callback?" + urllib.parse.urlparse(callback).query,
                           sshgate_signin=state_cookie)  # fmt: skip
    assert again.status == 400
    # Signing out on A ends the session on B too.
    headers = {"Cookie": f"{COOKIE}={cookie}", "X-CSRF-Token": on_a[1]["csrf_token"]}
    async with pair.http.post(pair.url(pair.a, "/signout"), headers=headers) as out:
        assert out.status == 204
    assert (await pair.me(pair.b, cookie))[0] == 401
    assert (await pair.me(pair.a, cookie))[0] == 401


async def test_a_one_time_link_signs_in_exactly_once_across_replicas(pair: Pair) -> None:
    for _ in range(5):
        path = path_of(await pair.a.one_time_link("demo@corp.com"))
        answers = await asyncio.gather(pair.get(pair.a, path), pair.get(pair.b, path))
        assert sorted(a.status for a in answers) == [302, 403]
        winner = next(a for a in answers if a.status == 302)
        cookie = session_cookie(winner)
        assert [(await pair.me(app, cookie))[0] for app in (pair.a, pair.b)] == [200, 200]
        assert (await pair.get(pair.b, path)).status == 403


async def test_the_store_holds_hashes_and_sealed_records_and_refuses_forged_ones(
    pair: Pair, capsys: pytest.CaptureFixture[str]
) -> None:
    cookie = session_cookie(await pair.get(pair.b, path_of(await pair.a.one_time_link("demo@corp.com"))))
    store = pair.replicas[0].state.store
    client = store.client
    keys = [as_text(k) for k in await client.keys("sg:web:*")]
    assert keys == [f"sg:web:session:{record_key(cookie)}"]  # the cookie itself is nowhere
    sealed = await client.get(keys[0])
    assert isinstance(sealed, bytes)
    assert b"demo@corp.com" not in sealed and b"csrf" not in sealed  # nothing readable
    # A record sealed under another key, claiming admin for a cookie the attacker chose.
    forged = "attacker-chosen-cookie-value"
    other = Sealer("some-other-hmac-key-of-32-characters-or-more")
    doc = {"d": {"email": "x@corp.com", "groups": [], "role": "admin", "csrf": "t"}, "e": 4e9}
    await client.set(
        f"sg:web:session:{record_key(forged)}", other.seal_private(f"web:session:{record_key(forged)}", doc)
    )
    # A valid record copied under the attacker's cookie: the seal covers the key.
    copied = "another-attacker-cookie"
    await client.set(f"sg:web:session:{record_key(copied)}", sealed)
    # A valid record with one byte changed.
    await client.set(keys[0], sealed[:-1] + bytes([sealed[-1] ^ 1]))
    for app in (pair.a, pair.b):
        for value in (forged, copied, cookie):
            assert (await pair.me(app, value))[0] == 401
    assert "state.forged_record" in capsys.readouterr().out  # the audit log says so


async def test_while_the_store_hangs_known_sessions_work_and_single_use_records_stay_single(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis").start()
    pair = await start_pair(server, tmp_path, None)
    assert server.process is not None
    try:
        cookie = session_cookie(await pair.get(pair.a, path_of(await pair.a.one_time_link("demo@corp.com"))))
        assert (await pair.me(pair.b, cookie))[0] == 200  # B has read it from the store
        in_store = path_of(await pair.a.one_time_link("demo@corp.com"))
        server.process.send_signal(signal.SIGSTOP)  # the store hangs: no answer, no error
        started = time.monotonic()
        assert [(await pair.me(app, cookie))[0] for app in (pair.a, pair.b)] == [200, 200]
        assert time.monotonic() - started < 2.0  # one state.timeout_ms (250 ms) per replica, then none
        assert (await pair.get(pair.b, in_store)).status == 503  # only the store may hand it out
        away = path_of(await pair.a.one_time_link("demo@corp.com"))  # while away: A's alone
        assert (await pair.get(pair.b, away)).status == 503
        signed_in_away = session_cookie(await pair.get(pair.a, away))
        assert (await pair.get(pair.a, away)).status == 503  # spent here; elsewhere only the store knows
        server.process.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 10
        while not all(r.state.available for r in pair.replicas):
            assert time.monotonic() < deadline, "the replicas never saw the store again"
            await asyncio.sleep(0.05)
        # Back: what A did alone reached the store; the link it wrote alone is nowhere to take.
        assert (await pair.me(pair.b, signed_in_away))[0] == 200
        assert (await pair.get(pair.b, away)).status == 403
        answers = await asyncio.gather(pair.get(pair.a, in_store), pair.get(pair.b, in_store))
        assert sorted(a.status for a in answers) == [302, 403]
    finally:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)
        await stop_pair(pair)
        server.stop()


async def test_sign_ins_started_store_nothing_and_a_completed_one_is_used_once_anywhere(
    signin_pair: Pair,
) -> None:
    """Anybody may start sign-ins without signing in: 1,000 of them leave nothing in the store.
    The one completed at the provider leaves one mark; its callback replayed, also on both
    replicas at once, signs nobody in again."""
    pair = signin_pair
    client = pair.replicas[0].state.store.client
    for _ in range(10):
        answers = await asyncio.gather(*(pair.get(app, "/signin") for app in (pair.a, pair.b) * 50))
        assert {a.status for a in answers} == {302}
    assert [as_text(k) for k in await client.keys("sg:web:*")] == []
    started = await pair.get(pair.a, "/signin?next=/sessions/y")
    state_cookie = started.cookies["sshgate_signin"].value
    callback = await asyncio.to_thread(
        Person(EMAIL).authorize, started.headers["Location"], pair.public_url + "/signin/callback"
    )
    path = "/signin/callback?" + urllib.parse.urlparse(callback).query
    racing = await asyncio.gather(*(pair.get(app, path, sshgate_signin=state_cookie) for app in (pair.a, pair.b)))
    # The loser is refused by the mark, or, if it got past the first look, by the provider (the
    # code is spent) or the mark again: either way exactly one browser session.
    assert sorted(a.status for a in racing) in ([302, 400], [302, 403]), [a.status for a in racing]
    winner = next(a for a in racing if a.status == 302)
    assert winner.headers["Location"] == "/sessions/y" and COOKIE in winner.cookies
    for app in (pair.a, pair.b):
        again = await pair.get(app, path, sshgate_signin=state_cookie)
        assert again.status == 400 and "used" in (await again.text())
    keys = sorted(as_text(k).split(":")[2] for k in await client.keys("sg:web:*"))
    assert keys == ["session", "signin"]
