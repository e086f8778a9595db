"""SIGHUP reloads run one at a time: the file read last is the configuration that stays."""

import asyncio
from pathlib import Path

import pytest

from sshgate.config import Policies, load_config
from sshgate.gateway.server import Gateway
from sshgate.policy.loader import ReloadableDecisionPoint


async def test_two_close_sighups_apply_the_newer_file_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sshgate.yaml"

    def write(idle_timeout_s: int) -> None:
        path.write_text(f"data_dir: {tmp_path / 'data'}\nlimits: {{idle_timeout_s: {idle_timeout_s}}}\n")

    write(100)
    gateway = Gateway(load_config(str(path)), str(path))
    gateway.policy = await ReloadableDecisionPoint.open(Policies())
    gateway.ctx = gateway._bind_context(gateway.config)
    first_policies, release = asyncio.Event(), asyncio.Event()

    async def slow_first(config: Policies | None = None) -> None:
        if not first_policies.is_set():
            first_policies.set()
            await release.wait()

    monkeypatch.setattr(gateway.policy, "reload", slow_first)
    write(200)
    older = asyncio.create_task(gateway.reload())
    await first_policies.wait()  # the first SIGHUP has read 200 and is compiling its policies
    write(300)
    newer = asyncio.create_task(gateway.reload())
    await asyncio.sleep(0.05)
    release.set()
    assert await asyncio.gather(older, newer) == [True, True]
    assert gateway.config.limits.idle_timeout_s == 300
    await gateway.policy.aclose()
