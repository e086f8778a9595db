"""Web app benchmark (issue 16): the sessions list over 10,000 recordings through the API, and
keystroke echo with a live viewer attached vs not.

1. Writes N fake sessions (tests/support/recordings.py), serves the web app in-process over
   them, signs in with a one-time link and times ``GET /api/v1/sessions`` (the first page the
   list shows) cold and warm, and ``index.html``. Target: first page < 300 ms at 10,000.
2. Runs the gateway with the web app (a private sshd, the test OpenID provider for a bearer ID
   token), opens two PTY sessions, watches one over the ``live`` route and measures single-byte
   echo on both, interleaved (bench_relay's measurement). Target: no measurable difference.
Run: .venv/bin/python -m bench.bench_web [--sessions 10000] [--runs 20] [--keystrokes 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
from tests.support.gateway import Client, GatewayProcess
from tests.support.net import free_port
from tests.support.oidc import CLIENT_SECRET, OidcProvider, device_id_token
from tests.support.recordings import write_sessions

from bench.bench_relay import KEX, echo_latency
from bench.common import bench_env, percentiles
from sshgate.config import Web
from sshgate.recording.catalog import RecordingCatalog
from sshgate.recording.sources import LocalSource
from sshgate.state.local import LocalState
from sshgate.state.seal import Sealer
from sshgate.web.app import WebApp

TARGET_MS = 300.0


async def list_page(sessions: int, runs: int) -> None:
    print(f"\n## Sessions list over {sessions} recordings, through GET /api/v1/sessions")
    with tempfile.TemporaryDirectory(prefix="sshgate-bench-web-") as tmp:
        root = Path(tmp)
        write_sessions(root, sessions)
        web = WebApp(
            Web(listen="127.0.0.1:0", public_url="http://127.0.0.1"),
            RecordingCatalog([LocalSource(root)]),
            LocalState(str(root / "data")),
            Sealer(secrets.token_urlsafe(32)),
            lambda: None,
        )
        await web.start()
        base = f"http://127.0.0.1:{web.port}"
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                link = (await web.one_time_link("bench@example.com")).replace("http://127.0.0.1", base)
                async with http.get(link) as answer:
                    assert answer.status == 200
                times = []
                for _ in range(runs + 1):
                    start = time.perf_counter()
                    async with http.get(base + "/api/v1/sessions") as answer:
                        body = await answer.json()
                    times.append((time.perf_counter() - start) * 1000)
                    assert len(body["sessions"]) == 50
                start = time.perf_counter()
                async with http.get(base + "/") as answer:
                    await answer.read()
                page_ms = (time.perf_counter() - start) * 1000
        finally:
            await web.stop()
    warm = times[1:]
    print(f"cold first page (index built):  {times[0]:8.1f} ms")
    print(f"warm first page: median {statistics.median(warm):6.1f} ms   worst {max(warm):6.1f} ms  "
          f"(target < {TARGET_MS:.0f} ms)")  # fmt: skip
    print(f"index.html:                     {page_ms:8.1f} ms")


def keystrokes_watched(count: int) -> None:
    print(f"\n## Keystroke echo through sshgate, {count} single bytes, one of two sessions watched live")
    with bench_env() as env:
        provider = OidcProvider(web_redirect="http://127.0.0.1/signin/callback")  # ID tokens with email
        web_port = free_port()
        config = env.config(
            web={"listen": f"127.0.0.1:{web_port}", "public_url": f"http://127.0.0.1:{web_port}",
                 "viewer_groups": ["security"]},
        )  # fmt: skip
        config["identities"]["oidc"] = {"name": "okta", "issuer": provider.issuer, "client_id": "sshgate",
                                        "client_secret": CLIENT_SECRET}  # fmt: skip
        gw = GatewayProcess(env.root / "gw", config).start()
        try:
            bearer = {"Authorization": "Bearer " + device_id_token(provider.issuer, "sec@corp.com")}
            base = f"http://127.0.0.1:{web_port}"
            client = Client(gw, env.keys.alice, env.root / "client")
            shell = client.ssh_argv("alice+web-1", options=["-o", f"KexAlgorithms={KEX}"])
            viewers: list[subprocess.Popen[bytes]] = []
            argvs = {"unwatched": shell, "watched": [*shell, "WATCHED=1"]}
            measured = echo_latency(argvs, count, ready=lambda: viewers.append(_watch(gw, base, bearer)))
        finally:
            for viewer in viewers:
                viewer.terminate()
                viewer.wait()
            gw.stop()
            provider.stop()
    p50 = {n: percentiles(s)[0] for n, s in measured.items()}
    p99 = {n: percentiles(s)[1] for n, s in measured.items()}
    for name in measured:
        print(f"{name:<12} p50 {p50[name]:7.0f} us   p99 {p99[name]:7.0f} us")
    print(f"watched - unwatched: p50 {p50['watched'] - p50['unwatched']:+.0f} us, "
          f"p99 {p99['watched'] - p99['unwatched']:+.0f} us (target: within the noise)")  # fmt: skip


def _watch(gw: GatewayProcess, base: str, bearer: dict[str, str]) -> subprocess.Popen[bytes]:
    """A viewer of the WATCHED session's live stream: curl, so it costs this process nothing."""
    (start,) = [e for e in gw.events("channel.open") if "WATCHED=1" in str(e.get("command"))]
    url = f"{base}/api/v1/sessions/{start['session_id']}/channels/1/live"
    header = "Authorization: " + bearer["Authorization"]
    viewer = subprocess.Popen(["curl", "-sfN", "-H", header, url], stdout=subprocess.PIPE)
    assert viewer.stdout is not None
    viewer.stdout.read(1)  # the stream is open (a first event or keepalive)...
    time.sleep(0.5)  # ...and the watch is in place before the first keystroke
    threading.Thread(target=viewer.stdout.read, daemon=True).start()
    return viewer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--keystrokes", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(list_page(args.sessions, args.runs))
    keystrokes_watched(args.keystrokes)


if __name__ == "__main__":
    main()
