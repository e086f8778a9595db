"""The web app's listener: pages, static files, sign-in and the API on ``web.listen``
(docs/api.md). One per gateway: with ``workers: N`` it runs in worker 0 and reaches every
worker's sessions through the shared state."""

from __future__ import annotations

import asyncio
import html
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from sshgate import audit
from sshgate.config import Web
from sshgate.metrics import parse_listen
from sshgate.oidc.client import OidcClient
from sshgate.recording.catalog import Catalog
from sshgate.state.base import SharedState
from sshgate.state.seal import Sealer
from sshgate.web.api import Api
from sshgate.web.auth import Authenticator
from sshgate.web.roles import Principal
from sshgate.web.signin import SignInRoutes
from sshgate.web.store import COOKIE, WebStore

STATIC = Path(__file__).parent / "static"
# Nothing from elsewhere: the player is shipped in static/vendor; it compiles WebAssembly.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response as its headers go out: errors, and streamed ones (cast, live) too."""
    response.headers.update(_SECURITY_HEADERS)


def browsers_use_https(config: Web) -> bool:
    """Cookies are ``Secure`` when browsers reach the app over HTTPS: ``web.tls``, or a
    TLS-terminating ingress in front, which an ``https://`` ``public_url`` names (docs/api.md)."""
    return config.tls is not None or urlsplit(config.public_url).scheme.lower() == "https"


class WebApp:
    def __init__(
        self,
        config: Web,
        catalog: Catalog,
        shared: SharedState,
        sealer: Sealer,
        oidc: Callable[[], OidcClient | None],
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.store = WebStore(shared, sealer)
        self.auth = Authenticator(config, self.store, oidc)
        self.app = web.Application()
        self.app.on_response_prepare.append(_security_headers)
        Api(self.auth, catalog, shared).add_to(self.app)
        SignInRoutes(self.auth, config.public_url, browsers_use_https(config)).add_to(self.app)
        self.app.router.add_get("/", self.page("index.html"))
        self.app.router.add_get("/sessions/{id}", self.page("session.html"))
        self.app.router.add_static("/static/", STATIC, follow_symlinks=False)
        self._runner = web.AppRunner(self.app, access_log=None)
        self._warming: asyncio.Task[None] | None = None
        self.port = 0

    def page(self, name: str) -> Callable[[web.Request], Any]:
        """A static page with the session's CSRF token in ``<meta name="csrf-token">``."""
        text = (STATIC / name).read_text(encoding="utf-8")

        async def handler(request: web.Request) -> web.Response:
            cookie = request.cookies.get(COOKIE)
            principal = await self.store.session(cookie) if cookie else None
            token = principal.csrf if principal is not None and principal.csrf else ""
            body = text.replace("{{csrf}}", html.escape(token))
            return web.Response(text=body, content_type="text/html", headers={"Cache-Control": "no-store"})

        return handler

    async def one_time_link(self, email: str) -> str:
        """A single-use sign-in as admin for a few minutes (``sshgate demo`` without a provider)."""
        token = await self.store.one_time_link(Principal(email, (), "admin"))
        return f"{self.config.public_url}/signin/once?token={token}"

    async def start(self) -> None:
        host, port = parse_listen(self.config.listen)
        context = None
        if self.config.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.config.tls.cert, self.config.tls.key)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._warming = asyncio.get_running_loop().create_task(self._warm_catalog())

    async def _warm_catalog(self) -> None:
        """The recordings index in the background: over 10,000 sessions the first page costs
        seconds cold; the app serves meanwhile (a request then waits for the same lock)."""
        started = time.monotonic()
        try:
            await self.catalog.warm()
        except Exception as exc:  # the first query reports it too; say why here
            audit.logger().warning("web.catalog_warm", result="failed", reason=f"{type(exc).__name__}: {exc}")
            return
        audit.logger().info("web.catalog_warm", ms=round((time.monotonic() - started) * 1000))

    async def stop(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
        await self._runner.cleanup()
