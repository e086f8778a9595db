"""workers: 2 — two processes share the SSH port; both serve, metrics are summed on one endpoint."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

from tests.conftest import Keys, Upstream, base_config
from tests.support.gateway import Client, GatewayProcess
from tests.support.net import free_port


def test_two_workers_share_the_port(keys: Keys, upstream: Upstream, tmp_path: Path) -> None:
    config = base_config(keys, upstream)
    config["workers"] = 2
    config["listen"] = {"host": "127.0.0.1", "port": free_port()}
    config["metrics"] = {"listen": "127.0.0.1:0"}
    gw = GatewayProcess(tmp_path / "gw", config).start()
    try:
        deadline = time.monotonic() + 20
        while len(gw.events("gateway.listening")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        listening = {e["pid"] for e in gw.events("gateway.listening")}
        metrics_event = gw.wait_event("metrics.listening")
        alice = Client(gw, keys.alice, tmp_path / "alice")
        for i in range(16):
            assert alice.ssh("alice+web-1", f"echo {i}").stdout == f"{i}\n".encode()
        served_by = {e["pid"] for e in gw.events("auth.success")}
        assert len(listening) == 2
        assert served_by == listening, "connections did not spread over both workers"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_event['port']}/readyz", timeout=5) as r:
            assert r.status == 200
        # A session is counted when its connection has closed on the gateway's side, which can
        # trail the client's exit by a moment: poll.
        deadline = time.monotonic() + 10
        total = 0.0
        while total < 16 and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_event['port']}/metrics", timeout=5) as r:
                text = r.read().decode()
            pattern = r'^sshgate_sessions_total\{outcome="closed",resource="web-1",type="ssh"\} (\S+)$'
            match = re.search(pattern, text, re.M)
            total = float(match.group(1)) if match else 0.0
            time.sleep(0.1)
        assert total == 16
    finally:
        assert gw.stop() == 0
