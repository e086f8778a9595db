"""Many replicas, one gateway (docs/operations.md, "Replicas"): two gateway processes sharing a
real redis-server, and one gateway of two workers without state:, behave as one gateway."""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sshgate.state.base import OutputChunk
from sshgate.state.redis_store import RedisStore, connect
from sshgate.state.replicated import ReplicatedState
from sshgate.state.seal import Sealer
from tests.conftest import Keys
from tests.replicas.conftest import HMAC_KEY, Factory, client, end, hold_session, metric, wait_open
from tests.support.gateway import Client, asyncssh_login
from tests.support.net import free_port
from tests.support.redis import RedisServer, silent_store


def wrong_password(c: Client, tmp_path: Path) -> None:
    result = c.password_ssh("alice+web-1", "sgt_not-the-token", tmp_path / "askpass", "true")
    assert result.returncode == 255


def until(check: object, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, what
        time.sleep(0.1)
    return time.monotonic() - started


def test_failures_on_both_replicas_lock_the_address_on_both_until_it_expires(
    start_gateway: Factory, redis_server: RedisServer, keys: Keys, tmp_path: Path
) -> None:
    a, b = start_gateway(redis_server.url), start_gateway(redis_server.url)
    source = "127.0.0.21"
    on_a, on_b = client(a, keys.alice, tmp_path / "a", source), client(b, keys.alice, tmp_path / "b", source)
    for c in (on_a, on_b, on_a, on_b):  # four failures, two on each: the limit is four
        wrong_password(c, tmp_path)
    locked_at = time.monotonic()
    for c, gw in ((on_a, a), (on_b, b)):
        refused = c.ssh("alice+web-1", "true")
        assert refused.returncode == 255 and b"too many failed logins" in refused.stderr, refused.stderr
        gw.wait_event("auth.locked_out", client_ip=source)  # the audit line may trail the client
    assert a.events("auth.lockout", client_ip=source) or b.events("auth.lockout", client_ip=source)
    time.sleep(max(0.0, 4.3 - (time.monotonic() - locked_at)))
    for c in (on_a, on_b):
        result = c.ssh("alice+web-1", "echo back")
        assert result.stdout == b"back\n", result.stderr


def test_the_session_cap_counts_both_replicas_and_a_killed_one_frees_its_slots(
    start_gateway: Factory, redis_server: RedisServer, keys: Keys, tmp_path: Path
) -> None:
    a, b = start_gateway(redis_server.url), start_gateway(redis_server.url)
    on_a = client(a, keys.alice, tmp_path / "a", "127.0.0.22")
    on_b = client(b, keys.alice, tmp_path / "b", "127.0.0.22")
    held = [hold_session(on_a), hold_session(on_b)]
    try:
        for process in held:
            wait_open(process)
        for c in (on_a, on_b):
            third = c.ssh("alice+web-1", "true")
            assert third.returncode == 1 and b"too many open sessions" in third.stderr, third.stderr
        for gw in (a, b):
            gw.wait_event("session.refused", event_kind="limit.sessions_per_user")
        john = client(b, keys.john, tmp_path / "john", "127.0.0.22")
        assert john.ssh("john+web-1", "echo other").stdout == b"other\n"  # another user is not capped
        assert a.process is not None
        a.process.kill()  # kill -9: no goodbye, its sessions stay in the store until they expire
        a.process.wait(10)
        freed_after = until(lambda: on_b.ssh("alice+web-1", "true").returncode == 0, 15, "slot not freed")
        assert freed_after < 3 + 5  # session_ttl_s, plus a few logins' time on a loaded machine
    finally:
        end(*held)


def test_the_two_workers_of_one_gateway_share_lockouts_and_caps(
    start_gateway: Factory, keys: Keys, tmp_path: Path
) -> None:
    gw = start_gateway(None, workers=2, listen={"host": "127.0.0.1", "port": free_port()})
    workers = {e["pid"] for e in gw.events("gateway.listening")}
    assert len(workers) == 2
    c = client(gw, keys.alice, tmp_path / "c", "127.0.0.23")
    held = [hold_session(c), hold_session(c)]
    try:
        for process in held:
            wait_open(process)
        # The kernel spreads connections over the workers by a hash of their addresses: try until
        # both have refused (six tries alone missed one worker 3 % of the time).
        refusing: set[int] = set()
        for tries in range(1, 41):
            refused = c.ssh("alice+web-1", "true")
            assert refused.returncode == 1 and b"too many open sessions" in refused.stderr, refused.stderr
            refusing = {e["pid"] for e in gw.wait_events("session.refused", tries)}
            if refusing == workers:
                break
        assert refusing == workers, "the cap was not tried on both workers"
    finally:
        end(*held)
    locker = client(gw, keys.alice, tmp_path / "l", "127.0.0.24")
    for _ in range(4):
        wrong_password(locker, tmp_path)
    locking: set[int] = set()
    for tries in range(1, 41):  # as above: until both workers have refused the locked-out address
        assert locker.ssh("alice+web-1", "true").returncode == 255
        locking = {e["pid"] for e in gw.wait_events("auth.locked_out", tries, client_ip="127.0.0.24")}
        if locking == workers:
            break
    assert locking == workers, "the lockout was not tried on both workers"


def test_store_stopped_mid_run_each_replica_counts_alone_then_they_agree_again(
    start_gateway: Factory, redis_server: RedisServer, keys: Keys, tmp_path: Path
) -> None:
    a, b = start_gateway(redis_server.url), start_gateway(redis_server.url)
    on_a = client(a, keys.alice, tmp_path / "a", "127.0.0.25")
    on_b = client(b, keys.alice, tmp_path / "b", "127.0.0.25")
    assert metric(a, "sshgate_state_available") == 1.0
    held = [hold_session(on_a)]
    try:
        wait_open(held[0])
        redis_server.stop()
        for gw in (a, b):
            john = client(gw, keys.john, tmp_path / f"john-{gw.port}", "127.0.0.25")
            assert john.ssh("john+web-1", "echo still").stdout == b"still\n"
        until(lambda: metric(a, "sshgate_state_available") == 0.0, 5, "a still reports the store")
        until(lambda: metric(b, "sshgate_state_available") == 0.0, 5, "b still reports the store")
        assert len(a.events("state.unavailable")) == 1  # once, not once per login
        # Alone, a knows its one session of alice's; b knows none and lets two in.
        held += [hold_session(on_b), hold_session(on_b)]
        for process in held[1:]:
            wait_open(process)
        held.append(hold_session(on_a))
        wait_open(held[-1])
        assert b"too many open sessions" in on_a.ssh("alice+web-1", "true").stderr
        redis_server.start()
        until(lambda: metric(a, "sshgate_state_available") == 1.0, 10, "a did not see the store return")
        until(lambda: metric(b, "sshgate_state_available") == 1.0, 10, "b did not see the store return")
        a.wait_event("state.available")
        b.wait_event("state.available")
        # Converged: four sessions of alice's are registered, so nobody gets a fifth anywhere.
        assert redis_server.cli("HLEN", "sshgate:live") == "4"
        for c in (on_a, on_b):
            assert b"too many open sessions" in c.ssh("alice+web-1", "true").stderr
        end(*held[:3])
        until(lambda: redis_server.cli("HLEN", "sshgate:live") == "1", 10, "ended sessions still registered")
        assert on_b.ssh("alice+web-1", "echo again").stdout == b"again\n"
    finally:
        end(*held)
        if redis_server.process is None:
            redis_server.start()


def test_a_hung_store_delays_no_login_beyond_the_bound(
    start_gateway: Factory, keys: Keys, tmp_path: Path
) -> None:
    with silent_store() as port:
        hung = start_gateway(f"redis://127.0.0.1:{port}/0", {"timeout_ms": 200})
        plain = start_gateway(None)
        on_hung = client(hung, keys.alice, tmp_path / "h", "127.0.0.26")
        on_plain = client(plain, keys.alice, tmp_path / "p", "127.0.0.26")
        timings: dict[str, list[float]] = {"hung": [], "plain": []}
        for _ in range(5):
            for name, c in (("hung", on_hung), ("plain", on_plain)):
                started = time.monotonic()
                assert c.ssh("alice+web-1", "true").returncode == 0
                timings[name].append(time.monotonic() - started)
        extra = statistics.median(timings["hung"]) - statistics.median(timings["plain"])
        assert extra < 0.2 + 0.3, timings  # the bound, and noise from a loaded machine
        assert metric(hung, "sshgate_state_available") == 0.0


def test_a_forged_lockout_locks_nobody(
    start_gateway: Factory, redis_server: RedisServer, keys: Keys, tmp_path: Path
) -> None:
    a = start_gateway(redis_server.url)
    forged = '{"a":"127.0.0.27","until":9999999999}'
    redis_server.cli("SET", "sshgate:lock:127.0.0.27", "0" * 64 + "." + forged, "EX", "60")
    redis_server.cli("PUBLISH", "sshgate:locks", "127.0.0.27 " + "0" * 64 + "." + forged)
    result = client(a, keys.alice, tmp_path / "a", "127.0.0.27").ssh("alice+web-1", "echo in")
    assert result.stdout == b"in\n", result.stderr
    assert a.wait_event("state.forged_record", kind="lock")["result"] == "ignored"


def test_terminate_from_another_replica_closes_the_session_with_who_did_it(
    start_gateway: Factory, redis_server: RedisServer, keys: Keys, tmp_path: Path
) -> None:
    """The web app's terminate, asked on any replica (here: the state as a replica builds it)."""
    a = start_gateway(redis_server.url)
    held = hold_session(client(a, keys.alice, tmp_path / "a", "127.0.0.28"))
    try:
        wait_open(held)
        started = a.wait_event("session.start", client_ip="127.0.0.28")

        async def terminate() -> tuple[list[str], bool]:
            store = RedisStore(
                connect(redis_server.url, 0.25), Sealer(HMAC_KEY), "sshgate:", uuid.uuid4().hex
            )
            web = ReplicatedState(store, 0.25, 3, lambda _up: None)
            try:
                live = [s.session_id for s in await web.sessions() if s.user == "alice@corp.com"]
                return live, await web.terminate(started["session_id"], "admin@corp.com")
            finally:
                await web.aclose()

        live, sent = asyncio.run(terminate())
        assert started["session_id"] in live and sent
        assert held.wait(10) != 0
        assert held.stderr is not None
        assert b"sshgate: session terminated by admin@corp.com" in held.stderr.read()
        assert a.wait_event("session.terminated", session_id=started["session_id"])
    finally:
        end(held)


def test_live_output_of_a_session_reaches_a_watcher_on_another_replica(
    start_gateway: Factory, redis_server: RedisServer, keys: Keys, tmp_path: Path
) -> None:
    """The web app's live view, on another replica: the owner publishes through the store only
    once the watcher's lease reaches it, with the channel number and its time."""
    a = start_gateway(redis_server.url)
    c = client(a, keys.alice, tmp_path / "a", "127.0.0.29")
    ticking = subprocess.Popen(
        c.ssh_argv("alice+web-1", "echo open; for i in $(seq 1 100); do echo tick-$i; sleep 0.1; done"),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_open(ticking)
        started = a.wait_event("session.start", client_ip="127.0.0.29")

        async def watch() -> list[OutputChunk]:
            store = RedisStore(
                connect(redis_server.url, 0.25), Sealer(HMAC_KEY), "sshgate:", uuid.uuid4().hex
            )
            web = ReplicatedState(store, 0.25, 3, lambda _up: None)
            await web.start(lambda _s, _by: False, lambda _fps: None)
            got: list[OutputChunk] = []
            try:
                async with asyncio.timeout(10):
                    async for chunk in web.subscribe_output(started["session_id"]):
                        got.append(chunk)
                        if len(got) >= 3:
                            return got
            finally:
                await web.aclose()
            return got

        chunks = asyncio.run(watch())
        assert len(chunks) == 3 and all(c.channel == 1 for c in chunks)
        assert all(re.fullmatch(rb"(tick-\d+\n)+", c.data) for c in chunks), chunks
        assert 0 < chunks[0].t <= chunks[1].t <= chunks[2].t < 15
    finally:
        end(ticking)


def test_a_watcher_gets_none_of_the_bytes_of_an_scp_transfer_the_recording_leaves_out(
    start_gateway: Factory, redis_server: RedisServer, keys: Keys
) -> None:
    """Without ``transfer_data`` an scp channel's bytes are not recorded, so no live viewer gets
    them either; the session's terminal channel still streams (docs/api.md, the live route)."""
    a = start_gateway(redis_server.url)
    secret = f"payroll-{uuid.uuid4().hex}"
    path = f"/tmp/sshgate-live-{uuid.uuid4().hex}"

    async def watch_a_copy() -> tuple[list[OutputChunk], bytes]:
        store = RedisStore(connect(redis_server.url, 0.25), Sealer(HMAC_KEY), "sshgate:", uuid.uuid4().hex)
        web = ReplicatedState(store, 0.25, 3, lambda _up: None)
        await web.start(lambda _s, _by: False, lambda _fps: None)
        got: list[OutputChunk] = []

        async def until_seen(text: bytes, nudge: Callable[[], None]) -> None:
            async with asyncio.timeout(10):
                while not any(text in c.data for c in got):
                    nudge()
                    await asyncio.sleep(0.2)

        try:
            async with asyncssh_login(a, keys.alice) as conn:
                echo = await conn.create_process("cat")  # channel 1: a terminal channel
                started = await asyncio.to_thread(a.wait_event, "session.start")

                async def collect() -> None:
                    async for chunk in web.subscribe_output(started["session_id"]):
                        got.append(chunk)

                watcher = asyncio.create_task(collect())
                await until_seen(b"before", lambda: echo.stdin.write("before\n"))  # the lease reached it
                await conn.run(f"printf %s {secret} > {path}", check=True)  # channel 2
                scp = await conn.create_process(f"scp -f {path}", encoding=None)  # channel 3
                scp.stdin.write(b"\0")
                size = int((await scp.stdout.readline()).split()[1])
                scp.stdin.write(b"\0")
                copied = await scp.stdout.readexactly(size)
                scp.stdin.write(b"\0")
                scp.stdin.write_eof()
                await scp.wait()
                await until_seen(b"after", lambda: echo.stdin.write("after\n"))
                await conn.run(f"rm -f {path}")
                watcher.cancel()
        finally:
            await web.aclose()
        return got, copied

    chunks, copied = asyncio.run(watch_a_copy())
    assert copied == secret.encode()
    assert not any(secret.encode() in c.data for c in chunks)
    assert {c.channel for c in chunks if c.data} == {1}, chunks
