"""The web app's start-up: ready at once, the recordings index built meanwhile in the background."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from sshgate.config import Web
from sshgate.recording.catalog import RecordingCatalog
from sshgate.recording.sources import LocalSource
from sshgate.state.local import LocalState
from sshgate.state.seal import Sealer
from sshgate.web.app import WebApp
from tests.support.recordings import write_sessions


async def test_the_index_is_warm_before_the_first_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_sessions(tmp_path / "recordings", 300)
    catalog = RecordingCatalog([LocalSource(tmp_path / "recordings")])
    app = WebApp(Web(listen="127.0.0.1:0", public_url="http://127.0.0.1"), catalog, LocalState(str(tmp_path)),
                 Sealer("a-web-test-key-of-32-characters-or-more"), lambda: None)  # fmt: skip
    await app.start()
    try:
        url = f"http://127.0.0.1:{app.port}/api/v1/me"
        async with aiohttp.ClientSession() as http, http.get(url) as answer:  # serving meanwhile
            assert answer.status == 401
        deadline = time.monotonic() + 20
        while "web.catalog_warm" not in (out := capsys.readouterr().out):
            assert time.monotonic() < deadline, "the index was never warmed"
            await asyncio.sleep(0.05)
        assert "ms=" in out
        assert len(catalog._by_id) == 300  # built without anyone asking (no refresh here)
    finally:
        await app.stop()
