"""Reload swaps policies only when the new set compiles; the watcher reloads on file changes."""

import asyncio
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sshgate.config import Policies
from sshgate.policy import loader
from sshgate.policy.decision import DecisionPoint
from sshgate.policy.loader import ReloadableDecisionPoint
from sshgate.policy.opa import OpaDecisionPoint
from sshgate.policy.sources import PolicyLoadError
from sshgate.policy.watch import watch_policies

INPUT = {"native_user": "devops", "user": {"email": "john@corp.com"}}


def _blocking(message: str) -> str:
    return (
        "package formal.v2\n"
        f'session := {{"action": "block", "type": "block_with_formal_message", "message": "{message}"}}\n'
    )


def _write(path: Path, text: str) -> None:
    """Write and move the mtime on, so a change is seen even within the clock's resolution."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


async def _message(point: ReloadableDecisionPoint) -> str | None:
    return (await point.decide("session", INPUT)).message


async def test_reload_keeps_old_set_when_new_fails(tmp_path: Path) -> None:
    policy = tmp_path / "p.rego"
    _write(policy, _blocking("first"))
    point = await ReloadableDecisionPoint.open(Policies(paths=[str(tmp_path)]))
    try:
        _write(policy, "package formal.v2\nsession := {\n")
        with pytest.raises(PolicyLoadError, match=r"p\.rego:"):
            await point.reload()
        assert await _message(point) == "first"
        _write(policy, _blocking("second"))
        await point.reload()
        assert await _message(point) == "second"
    finally:
        await point.aclose()


async def test_reload_to_another_config(tmp_path: Path) -> None:
    _write(tmp_path / "p.rego", _blocking("embedded"))
    point = await ReloadableDecisionPoint.open(Policies())
    try:
        assert (await point.decide("session", INPUT)).allowed and not point.has_rule("session")
        await point.reload(Policies(paths=[str(tmp_path)]))
        assert point.has_rule("session") and await _message(point) == "embedded"
        await point.reload(Policies(engine="opa", timeout_ms=10))
        assert isinstance(point.current, OpaDecisionPoint)
        await point.reload(Policies(paths=[str(tmp_path)]))  # retires the OPA client after its timeout
        assert await _message(point) == "embedded"
    finally:
        await point.aclose()


async def _until(predicate_message: str, point: ReloadableDecisionPoint) -> None:
    for _ in range(200):
        if await _message(point) == predicate_message:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"decision never became {predicate_message!r}")


async def test_watcher_reloads_on_change_and_survives_a_bad_file(tmp_path: Path) -> None:
    policy = tmp_path / "sub" / "p.rego"
    policy.parent.mkdir()
    _write(policy, _blocking("v1"))
    point = await ReloadableDecisionPoint.open(Policies(paths=[str(tmp_path)]))
    stop = asyncio.Event()
    with capture_logs() as logs:
        watcher = asyncio.create_task(watch_policies(point, stop, interval_s=0.02))
        await asyncio.sleep(0.05)
        _write(policy, _blocking("v2"))
        await _until("v2", point)
        _write(policy, "package formal.v2\nsession := {\n")
        for _ in range(200):
            if any(e["event"] == "policy.reload_failed" for e in logs):
                break
            await asyncio.sleep(0.01)
        assert await _message(point) == "v2"
        _write(tmp_path / "q.rego", "package formal.v2\nextra := 1\n")
        _write(policy, _blocking("v3"))
        await _until("v3", point)
        stop.set()
        await asyncio.wait_for(watcher, 1)
        await point.aclose()
    failed = [e for e in logs if e["event"] == "policy.reload_failed"]
    assert failed and "p.rego:" in failed[0]["error"]
    assert [e["event"] for e in logs if e["event"] == "policy.reloaded"] == ["policy.reloaded"] * 2


async def test_a_watcher_reload_cannot_put_back_older_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watcher's build, slow and started with the old settings, must not finish last and win."""
    _write(tmp_path / "p.rego", "package formal.v2\nextra := 1\n")  # no session rule: default_action
    old, new = Policies(paths=[str(tmp_path)]), Policies(paths=[str(tmp_path)], default_action="block")
    point = await ReloadableDecisionPoint.open(old)
    build, release = loader.build_decision_point, asyncio.Event()

    async def slow_for_old(config: Policies) -> DecisionPoint:
        if config == old:
            await release.wait()
        return await build(config)

    monkeypatch.setattr(loader, "build_decision_point", slow_for_old)
    try:
        watcher = asyncio.create_task(point.reload())  # what watch_policies calls
        await asyncio.sleep(0)
        sighup = asyncio.create_task(point.reload(new))  # what Gateway.reload calls
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(watcher, sighup)
        assert point.config == new
        assert not (await point.decide("session", INPUT)).allowed
    finally:
        await point.aclose()
