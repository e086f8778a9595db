"""An OPA-compatible Data API server on 127.0.0.1 that evaluates with the embedded engine.

It speaks OPA's wire format (``POST /v1/data/<path>`` with ``{"input": ...}`` → ``{"result": ...}``,
``{}`` when undefined) so the ``opa`` decision point's HTTP path is exercised for real.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sshgate.policy.rego import RegorusEngine
from sshgate.policy.sources import load_modules

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def _opa_json(value: Any) -> Any:
    """OPA sends sets as arrays."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=json.dumps)
    raise TypeError(type(value).__name__)


class FakeOpa:
    def __init__(self) -> None:
        self.engine = RegorusEngine.compile(load_modules([str(POLICIES)]))
        self.mode = "eval"  # or "hang", "garbage", "error"
        self.release = asyncio.Event()
        self.requests: list[str] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        if self.mode == "hang":
            await asyncio.wait_for(self.release.wait(), 10)
        if self.mode == "garbage":
            return web.Response(text="<html>proxy error</html>", content_type="text/html")
        if self.mode == "error":
            return web.json_response({"code": "internal_error"}, status=500)
        rule = "data." + request.match_info["path"].strip("/").replace("/", ".")
        body = await request.json()
        value = self.engine.eval_rule(rule, body["input"]) if self.engine.has_rule(rule) else None
        answer = {} if value is None else {"result": value}
        return web.Response(text=json.dumps(answer, default=_opa_json), content_type="application/json")


@pytest.fixture
async def fake_opa() -> AsyncIterator[FakeOpa]:
    opa = FakeOpa()
    app = web.Application()
    app.router.add_post("/v1/data/{path:.*}", opa.handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    opa.url = f"http://127.0.0.1:{port}"
    try:
        yield opa
    finally:
        opa.release.set()
        await runner.cleanup()
