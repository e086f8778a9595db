"""SIGHUP reloads: one at a time, the file read last stays, a refusal logs no line of the file."""

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sshgate.config import Policies, load_config
from sshgate.gateway.server import Gateway
from sshgate.policy.loader import ReloadableDecisionPoint


def _write(path: Path, idle_timeout_s: int, extra: str = "") -> None:
    path.write_text(
        f"data_dir: {path.parent / 'data'}\nlimits: {{idle_timeout_s: {idle_timeout_s}}}\n{extra}"
    )


async def _started(path: Path) -> Gateway:
    """A gateway with a configuration and policies, as after start(), without listening."""
    gateway = Gateway(load_config(str(path)), str(path))
    gateway.policy = await ReloadableDecisionPoint.open(Policies())
    gateway.ctx = gateway._bind_context(gateway.config)
    return gateway


@pytest.mark.parametrize("sighups", [1, 20])
async def test_sighups_during_a_reload_cost_one_more_rebuild_and_apply_the_newest_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sighups: int
) -> None:
    """One reload at a time, the file read last applied last; the SIGHUPs that arrive while one
    waits share it (a storm costs two rebuilds, not one per signal)."""
    path = tmp_path / "sshgate.yaml"
    _write(path, 100)
    gateway = await _started(path)
    builds: list[Policies | None] = []
    building, release = asyncio.Event(), asyncio.Event()

    async def held(config: Policies | None = None) -> None:
        builds.append(config)
        building.set()
        await release.wait()

    monkeypatch.setattr(gateway.policy, "reload", held)
    _write(path, 200)
    running = asyncio.create_task(gateway.reload())
    await building.wait()  # the first SIGHUP has read 200 and is compiling its policies
    later = [asyncio.create_task(gateway.reload()) for _ in range(sighups)]
    await asyncio.sleep(0.05)
    _write(path, 300)  # written before the waiting reload reads the file
    release.set()
    assert await asyncio.gather(running, *later) == [True] * (1 + sighups)
    assert len(builds) == 2 and gateway.config.limits.idle_timeout_s == 300
    await gateway.policy.aclose()


async def test_a_watcher_reload_after_close_swaps_nothing_in() -> None:
    point = await ReloadableDecisionPoint.open(Policies())
    await point.aclose()
    current = point.current
    await point.reload()
    assert point.current is current


async def test_a_refused_reload_logs_where_the_yaml_breaks_not_the_line(tmp_path: Path) -> None:
    path = tmp_path / "sshgate.yaml"
    _write(path, 100)
    gateway = await _started(path)
    _write(path, 200, "web:\n  session_key: @TOPSECRET-x\n")
    with capture_logs() as logs:
        assert not await gateway.reload()
    await gateway.policy.aclose()
    [refused] = [e for e in logs if e["event"] == "config.reload"]
    assert "TOPSECRET" not in str(refused) and "line 4, column 16" in refused["reason"]
