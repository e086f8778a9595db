"""/metrics, /healthz and /readyz of a real gateway process while real ssh sessions come and go."""

from __future__ import annotations

import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import Keys, Upstream, base_config
from tests.support.gateway import Client, GatewayProcess


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _value(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if match and match.group(1) == name:
            got = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
            if got == wanted:
                return float(match.group(3))
    return 0.0


def test_metrics_follow_sessions_and_readyz_flips_on_drain(keys: Keys, upstream: Upstream, tmp_path: Path) -> None:
    config = base_config(keys, upstream)
    config["metrics"] = {"listen": "127.0.0.1:0"}
    config["shutdown_grace_s"] = 3
    gw = GatewayProcess(tmp_path / "gw", config).start()
    try:
        port = int(gw.wait_event("metrics.listening")["port"])
        assert _get(port, "/healthz")[0] == 200
        assert _get(port, "/readyz") == (200, "ready\n")
        alice = Client(gw, keys.alice, tmp_path / "alice")
        stranger = Client(gw, keys.stranger, tmp_path / "stranger")
        assert alice.ssh("alice+web-1", "head -c 100000 /dev/zero").returncode == 0
        assert stranger.ssh("alice+web-1", "true").returncode == 255
        held = subprocess.Popen(
            alice.ssh_argv("alice+web-1", "echo up; sleep 30"), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        assert held.stdout is not None and held.stdout.readline() == b"up\n"
        text = _get(port, "/metrics")[1]
        assert _value(text, "sshgate_sessions_active") == 1
        assert _value(text, "sshgate_sessions_total", resource="web-1", type="ssh", outcome="closed") == 1
        assert _value(text, "sshgate_auth_attempts_total", method="publickey", result="success") == 2
        # The stranger's key was only queried and refused: no failure (nothing was proven wrong).
        assert _value(text, "sshgate_auth_attempts_total", method="publickey", result="refused") == 1
        assert _value(text, "sshgate_policy_decisions_total", stage="session", action="allow") == 2
        assert _value(text, "sshgate_bytes_total", direction="to_client") >= 100000
        assert _value(text, "sshgate_upstream_connect_seconds_count", type="ssh") == 2
        assert "process_resident_memory_bytes" in text
        gw.signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while _get(port, "/readyz")[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _get(port, "/readyz") == (503, "not ready\n")
        held.wait(timeout=15)
        assert gw.process is not None and gw.process.wait(timeout=15) == 0
    finally:
        gw.stop()
