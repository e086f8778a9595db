"""Lockout and per-connection tries, attacked from loopback addresses of their own (127.0.0.x).

The gateway counts a failure once, on every attempt of every method, and checks the lockout on
every attempt: a connection opened before its address was locked out gets nowhere afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import timeit
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.security.attacker import attempt, signing_without_query
from tests.support.gateway import Client, GatewayProcess

FAILURES_BEFORE_LOCKOUT = 4
MAX_AUTH_TRIES = 3
ALICE = "alice+web-1"


@pytest.fixture(scope="module")
def gw(keys: Keys, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = base_config(keys, upstream)
    config["limits"] = {
        "auth_failures_before_lockout": FAILURES_BEFORE_LOCKOUT,
        "lockout_s": 120,
        "max_auth_tries": MAX_AUTH_TRIES,
    }
    proc = GatewayProcess(tmp_path_factory.mktemp("gw-lockout"), config).start()
    yield proc
    proc.stop()


def _key(path: Path) -> asyncssh.SSHKey:
    return asyncssh.read_private_key(path)


def _failures(gw: GatewayProcess, source: str, at_least: int = 0) -> list[dict[str, object]]:
    return gw.wait_events("auth.failure", at_least, client_ip=source)


def test_failures_count_once_and_a_success_does_not_clear_them(gw: GatewayProcess, keys: Keys) -> None:
    source = "127.0.0.2"
    for _ in range(FAILURES_BEFORE_LOCKOUT - 1):
        bad = asyncio.run(attempt(gw.port, ALICE, passwords=["sgt_wrong"], source=source))
        assert not bad.ok
    assert len(_failures(gw, source, FAILURES_BEFORE_LOCKOUT - 1)) == FAILURES_BEFORE_LOCKOUT - 1
    # Counted once each (not again when the connection closes): not locked yet.
    good = asyncio.run(
        attempt(gw.port, ALICE, passwords=[keys.alice_token], source=source, command="echo in")
    )
    assert good.ok and good.output == "in\n", good.error
    assert not gw.events("auth.lockout", client_ip=source)
    # The success did not reset the count: the next failure locks the address.
    assert not asyncio.run(attempt(gw.port, ALICE, passwords=["sgt_wrong"], source=source)).ok
    gw.wait_event("auth.lockout", client_ip=source)
    locked = asyncio.run(attempt(gw.port, ALICE, passwords=[keys.alice_token], source=source))
    assert not locked.ok
    assert "too many failed logins from 127.0.0.2" in locked.error
    assert len(_failures(gw, source, FAILURES_BEFORE_LOCKOUT)) == FAILURES_BEFORE_LOCKOUT


@pytest.mark.parametrize("method", ["password", "publickey"])
def test_connection_opened_before_the_lockout_cannot_log_in_after_it(
    gw: GatewayProcess, keys: Keys, method: str
) -> None:
    source = {"password": "127.0.0.3", "publickey": "127.0.0.4"}[method]
    credential: dict[str, object] = (
        {"passwords": [keys.alice_token]} if method == "password" else {"keys": [_key(keys.alice)]}
    )

    async def scenario() -> tuple[bool, str]:
        hold, holding = asyncio.Event(), asyncio.Event()
        early = asyncio.create_task(
            attempt(gw.port, ALICE, source=source, hold=hold, holding=holding, **credential)  # type: ignore[arg-type]
        )
        await asyncio.wait_for(holding.wait(), 30)  # authenticating, no credential offered yet
        for _ in range(FAILURES_BEFORE_LOCKOUT):
            await attempt(gw.port, ALICE, passwords=["sgt_wrong"], source=source)
        hold.set()
        outcome = await early
        return outcome.ok, outcome.error

    ok, error = asyncio.run(scenario())
    assert not ok and "too many failed logins" in error, error
    gw.wait_event("auth.locked_out", client_ip=source, method=method)
    assert not gw.events("auth.success", client_ip=source)


def test_one_connection_gets_max_auth_tries(gw: GatewayProcess, keys: Keys) -> None:
    source = "127.0.0.5"
    outcome = asyncio.run(
        attempt(gw.port, ALICE, passwords=[f"sgt_guess{i}" for i in range(10)], source=source)
    )
    assert not outcome.ok and outcome.error == "too many authentication attempts", outcome.error
    assert len(outcome.prompts) == MAX_AUTH_TRIES + 1
    assert len(_failures(gw, source, MAX_AUTH_TRIES)) == MAX_AUTH_TRIES
    gw.wait_event("auth.max_tries", client_ip=source, limit=MAX_AUTH_TRIES)


def test_refused_key_queries_count_toward_max_auth_tries(gw: GatewayProcess, keys: Keys) -> None:
    """As in OpenSSH, a key the server answers no to uses a try (but is no failure)."""
    source = "127.0.0.8"
    strangers = [asyncssh.generate_private_key("ssh-ed25519") for _ in range(MAX_AUTH_TRIES)]
    outcome = asyncio.run(attempt(gw.port, ALICE, keys=[*strangers, _key(keys.alice)], source=source))
    assert not outcome.ok and outcome.error == "too many authentication attempts", outcome.error
    gw.wait_event("auth.max_tries", client_ip=source, method="publickey")
    assert not _failures(gw, source)
    enough = asyncio.run(attempt(gw.port, ALICE, keys=[*strangers[1:], _key(keys.alice)], source=source))
    assert enough.ok, enough.error


def test_requests_sent_ahead_count_as_they_start(gw: GatewayProcess, keys: Keys) -> None:
    """Twenty password requests in one burst: each one the server starts is an attempt, so the
    burst ends at max_auth_tries instead of queueing twenty scrypt runs."""
    source = "127.0.0.6"
    outcome = asyncio.run(attempt(gw.port, ALICE, passwords=["sgt_burst"] * 2, source=source, ahead=20))
    assert not outcome.ok  # cut off while still sending: the disconnect reason may not arrive
    gw.wait_event("auth.max_tries", client_ip=source)
    assert len(_failures(gw, source)) <= MAX_AUTH_TRIES


def test_key_queries_are_no_failures_but_signed_refusals_are(
    gw: GatewayProcess, keys: Keys, tmp_path: Path
) -> None:
    source = "127.0.0.7"
    stranger = Client(gw, keys.stranger, tmp_path / "stranger")
    for _ in range(FAILURES_BEFORE_LOCKOUT + 1):
        # Stock ssh only asks whether the key would do, and gives up: nothing was proven wrong.
        refused = stranger.ssh(ALICE, "true", options=["-o", f"BindAddress={source}"])
        assert refused.returncode == 255 and b"Permission denied" in refused.stderr
    assert not _failures(gw, source)
    with signing_without_query():
        for _ in range(FAILURES_BEFORE_LOCKOUT):
            assert not asyncio.run(attempt(gw.port, ALICE, keys=[_key(keys.stranger)], source=source)).ok
    failures = _failures(gw, source, FAILURES_BEFORE_LOCKOUT)
    assert len(failures) == FAILURES_BEFORE_LOCKOUT
    assert {f["method"] for f in failures} == {"publickey"}
    assert all(f["reason"] == "key not authorized for this identity" for f in failures)
    gw.wait_event("auth.lockout", client_ip=source)
    alice = Client(gw, keys.alice, tmp_path / "alice")
    locked = alice.ssh(ALICE, "true", options=["-o", f"BindAddress={source}"])
    assert locked.returncode == 255 and b"too many failed logins from 127.0.0.7" in locked.stderr


def test_a_login_without_tokens_costs_a_token_check(gateway: GatewayProcess) -> None:
    """A wrong password costs one scrypt run whether the login has tokens (alice) or none (john,
    an unknown email): the gap between two prompts is the gateway's check of the previous answer.
    Each login's fastest gap is compared with the fastest scrypt run here, with room for load
    (without the dummy hash a login with no tokens answered in 1-5 ms, a scrypt run is 50+)."""
    scrypt_s = min(
        timeit.repeat(lambda: hashlib.scrypt(b"x", salt=b"s" * 16, n=2**14, r=8, p=1), number=1, repeat=5)
    )
    for login in ("alice+web-1", "john+web-1", "idp:human:nobody@corp.com+web-1"):
        prompts = asyncio.run(attempt(gateway.port, login, passwords=["sgt_wrong"] * 5)).prompts
        gaps = [b - a for a, b in itertools.pairwise(prompts)]
        assert len(gaps) == 5 and min(gaps) > 0.3 * scrypt_s, (login, gaps, scrypt_s)
