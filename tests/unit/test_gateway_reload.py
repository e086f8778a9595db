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


async def test_two_close_sighups_apply_the_newer_file_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sshgate.yaml"
    _write(path, 100)
    gateway = await _started(path)
    first_policies, release = asyncio.Event(), asyncio.Event()

    async def slow_first(config: Policies | None = None) -> None:
        if not first_policies.is_set():
            first_policies.set()
            await release.wait()

    monkeypatch.setattr(gateway.policy, "reload", slow_first)
    _write(path, 200)
    older = asyncio.create_task(gateway.reload())
    await first_policies.wait()  # the first SIGHUP has read 200 and is compiling its policies
    _write(path, 300)
    newer = asyncio.create_task(gateway.reload())
    await asyncio.sleep(0.05)
    release.set()
    assert await asyncio.gather(older, newer) == [True, True]
    assert gateway.config.limits.idle_timeout_s == 300
    await gateway.policy.aclose()


async def test_a_storm_of_sighups_costs_two_rebuilds_and_applies_the_newest_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sshgate.yaml"
    _write(path, 100)
    gateway = await _started(path)
    builds, first_building, release = [], asyncio.Event(), asyncio.Event()

    async def counted(config: Policies | None = None) -> None:
        builds.append(config)
        first_building.set()
        await release.wait()

    monkeypatch.setattr(gateway.policy, "reload", counted)
    _write(path, 200)
    running = asyncio.create_task(gateway.reload())
    await first_building.wait()
    storm = [asyncio.create_task(gateway.reload()) for _ in range(20)]
    await asyncio.sleep(0.05)
    _write(path, 300)  # written before the waiting reload reads the file
    release.set()
    assert await asyncio.gather(running, *storm) == [True] * 21
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
