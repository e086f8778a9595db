"""The provider's HTTP endpoints, reached with bounded time and size.

Every failure to get a JSON answer is :class:`ProviderUnreachable`, which a sign-in shows as
"sign-in unavailable". Messages name the endpoint and the failure, never a request body (which
can hold the client secret or a device code).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

MAX_BODY = 1 << 20


class ProviderUnreachable(Exception):
    """No usable answer from the provider (network, timeout, non-JSON, oversized)."""


class ProviderHttp:
    """One aiohttp session for the gateway's calls to one provider."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No cookies, no environment proxies: the provider is named by the configuration alone.
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
            )
        return self._session

    async def get_json(self, url: str, bearer: str | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        status, doc = await self._call("GET", url, headers=headers)
        if status != 200:
            raise ProviderUnreachable(f"GET {_where(url)}: HTTP {status}")
        return doc

    async def post_form(
        self, url: str, form: dict[str, str], headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """POST a form; the status and JSON body, whatever the status (OAuth errors are 400s).
        ``headers`` may carry the client's HTTP Basic credentials (RFC 6749 §2.3.1)."""
        sent = {"Accept": "application/json", **(headers or {})}
        return await self._call("POST", url, data=form, headers=sent)

    async def _call(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            async with self._client().request(method, url, allow_redirects=False, **kwargs) as response:
                body = await response.content.read(MAX_BODY + 1)
                status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ProviderUnreachable(f"{method} {_where(url)}: {type(exc).__name__}: {exc}") from None
        if len(body) > MAX_BODY:
            raise ProviderUnreachable(f"{method} {_where(url)}: answer larger than {MAX_BODY} bytes")
        try:
            return status, json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ProviderUnreachable(f"{method} {_where(url)}: HTTP {status}, not JSON") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _where(url: str) -> str:
    """The URL without its query (a query could carry a code)."""
    return url.split("?", 1)[0]
