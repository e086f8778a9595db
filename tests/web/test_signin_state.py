"""Sign-ins in flight in one gateway's memory (no ``state:``), against the real OpenID provider:
starting them, which anybody may, grows nothing on the server; one completed is used once; the
cookies are ``Secure`` whenever browsers use HTTPS."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from sshgate.config import OidcConfig, Web
from sshgate.oidc.client import OidcClient
from sshgate.recording.catalog import RecordingCatalog
from sshgate.recording.sources import LocalSource
from sshgate.state.local import LocalState
from sshgate.state.seal import Sealer
from sshgate.web.app import WebApp
from sshgate.web.store import COOKIE
from tests.support.net import free_port
from tests.support.oidc import CLIENT_SECRET, OidcProvider, Person


@contextlib.asynccontextmanager
async def web_app(tmp_path: Path, scheme: str = "http") -> AsyncIterator[tuple[WebApp, LocalState, str]]:
    """The app with the test provider, served over plain HTTP; ``public_url`` has ``scheme``
    (https: a TLS-terminating ingress in front). Yields the app, its state and its plain URL."""
    port = free_port()
    provider = OidcProvider(web_redirect=f"{scheme}://127.0.0.1:{port}/signin/callback")
    oidc = OidcClient(OidcConfig(name="okta", issuer=provider.issuer, client_id="sshgate",
                                 client_secret=CLIENT_SECRET, allowed_domains=["corp.com"]))  # fmt: skip
    shared = LocalState(str(tmp_path))
    app = WebApp(Web(listen=f"127.0.0.1:{port}", public_url=f"{scheme}://127.0.0.1:{port}"),
                 RecordingCatalog([LocalSource(tmp_path / "recordings")]), shared,
                 Sealer("a-web-test-key-of-32-characters-or-more"), lambda: oidc)  # fmt: skip
    await app.start()
    try:
        yield app, shared, f"http://127.0.0.1:{port}"
    finally:
        await app.stop()
        provider.stop()


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_cookies_are_secure_when_public_url_is_https_without_web_tls(
    tmp_path: Path, scheme: str
) -> None:
    async with web_app(tmp_path, scheme) as (app, _, url), aiohttp.ClientSession() as http:
        async with http.get(url + "/signin", allow_redirects=False) as started:
            assert started.status == 302
            state_cookie = started.headers["Set-Cookie"]
        link = (await app.one_time_link("sec@corp.com")).split("/signin/once", 1)[1]
        async with http.get(url + "/signin/once" + link, allow_redirects=False) as signed_in:
            assert signed_in.status == 302
            session_cookie = signed_in.headers["Set-Cookie"]
    assert state_cookie.startswith("sshgate_signin=") and session_cookie.startswith(f"{COOKIE}=")
    for cookie in (state_cookie, session_cookie):
        assert ("; Secure" in cookie) == (scheme == "https"), cookie


async def test_a_thousand_sign_in_starts_store_nothing_and_a_replayed_callback_is_refused(
    tmp_path: Path,
) -> None:
    async with web_app(tmp_path) as (_, shared, public_url), aiohttp.ClientSession() as http:

        async def get(path: str, state_cookie: str = "") -> tuple[int, str, aiohttp.ClientResponse]:
            headers = {"Cookie": f"sshgate_signin={state_cookie}"} if state_cookie else {}
            async with http.get(public_url + path, headers=headers, allow_redirects=False) as answer:
                return answer.status, await answer.text(), answer

        for _ in range(10):
            answers = await asyncio.gather(*(get("/signin") for _ in range(100)))
            assert {status for status, _, _ in answers} == {302}
        signins = shared.records._of("signin")
        assert len(signins) == 0
        _, _, started = await get("/signin?next=/sessions/z")
        state_cookie = started.cookies["sshgate_signin"].value
        callback = await asyncio.to_thread(
            Person("sec@corp.com").authorize, started.headers["Location"], public_url + "/signin/callback"
        )
        path = "/signin/callback?" + urllib.parse.urlparse(callback).query
        status, _, done = await get(path, state_cookie)
        assert status == 302 and done.headers["Location"] == "/sessions/z" and COOKIE in done.cookies
        assert len(signins) == 1  # the mark of the one completed
        status, text, _ = await get(path, state_cookie)
        assert status == 400 and "used" in text
        assert len(signins) == 1 and len(shared.records._of("session")) == 1


async def test_a_leaked_callback_url_signs_nobody_in_from_another_client(tmp_path: Path) -> None:
    """The callback URL (code and state) from a log or history, without the browser's cookie:
    refused, with the state as the cookie too; the browser that started it still signs in."""
    async with web_app(tmp_path) as (_, shared, url), aiohttp.ClientSession() as victim:
        async with victim.get(url + "/signin", allow_redirects=False) as started:
            location = started.headers["Location"]
            secret = started.cookies["sshgate_signin"].value
        callback = await asyncio.to_thread(
            Person("sec@corp.com").authorize, location, url + "/signin/callback"
        )
        query = urllib.parse.urlparse(callback).query
        state = urllib.parse.parse_qs(query)["state"][0]
        assert secret not in callback and state != secret
        async with aiohttp.ClientSession() as attacker:
            for cookie in ({}, {"Cookie": f"sshgate_signin={state}"}):
                async with attacker.get(f"{url}/signin/callback?{query}", headers=cookie) as answer:
                    assert answer.status == 400 and "not started in this browser" in await answer.text()
        assert len(shared.records._of("session")) == 0
        mine = {"Cookie": f"sshgate_signin={secret}"}  # aiohttp's jar keeps no cookies of an IP address
        async with victim.get(
            f"{url}/signin/callback?{query}", headers=mine, allow_redirects=False
        ) as answer:
            assert answer.status == 302 and COOKIE in answer.cookies
