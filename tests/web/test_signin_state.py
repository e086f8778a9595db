"""Sign-ins in flight in one gateway's memory (no ``state:``), against the real OpenID provider:
starting them, which anybody may, grows nothing on the server; one completed is used once."""

from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path

import aiohttp

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


async def test_a_thousand_sign_in_starts_store_nothing_and_a_replayed_callback_is_refused(
    tmp_path: Path,
) -> None:
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    provider = OidcProvider(web_redirect=f"{public_url}/signin/callback")
    oidc = OidcClient(OidcConfig(name="okta", issuer=provider.issuer, client_id="sshgate",
                                 client_secret=CLIENT_SECRET, allowed_domains=["corp.com"]))  # fmt: skip
    shared = LocalState(str(tmp_path))
    app = WebApp(Web(listen=f"127.0.0.1:{port}", public_url=public_url),
                 RecordingCatalog([LocalSource(tmp_path / "recordings")]), shared,
                 Sealer("a-web-test-key-of-32-characters-or-more"), lambda: oidc)  # fmt: skip
    await app.start()
    try:
        async with aiohttp.ClientSession() as http:

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
    finally:
        await app.stop()
        provider.stop()
