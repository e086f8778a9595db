"""Authentication: tokens, user certificates, lockout; connection binding; reload; host key."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.support.gateway import Client, GatewayProcess
from tests.support.sshd import keygen, sign_cert


def _password_ssh(
    client: Client, login: str, secret: str, tmp_path: Path
) -> subprocess.CompletedProcess[bytes]:
    return client.password_ssh(login, secret, tmp_path, "id -un")


def test_access_token_as_password(alice: Client, keys: Keys, gateway: GatewayProcess, tmp_path: Path) -> None:
    ok = _password_ssh(alice, "alice+web-1", keys.alice_token, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == b"sgtest\n"
    assert gateway.events("auth.success", method="password")
    bad = _password_ssh(alice, "alice+web-1", keys.alice_token + "x", tmp_path)
    assert bad.returncode == 255
    assert b"Permission denied" in bad.stderr


def _cert_client(
    gateway: GatewayProcess, keys: Keys, tmp_path: Path, principal: str, validity: str
) -> Client:
    key = keygen(tmp_path / "certuser", "certuser")
    cert = sign_cert(keys.gateway_ca, Path(str(key) + ".pub"), "test-cert", principal, validity)
    client = Client(gateway, key, tmp_path)
    client.config.write_text(client.config.read_text() + f"  CertificateFile {cert}\n")
    return client


def test_user_certificate(gateway: GatewayProcess, keys: Keys, tmp_path: Path) -> None:
    client = _cert_client(gateway, keys, tmp_path, "alice@corp.com", "-5m:+1h")
    result = client.ssh("idp:human:alice@corp.com+web-1", "id -un")
    assert result.stdout == b"sgtest\n", result.stderr
    assert gateway.events("auth.success", method="certificate", identity="alice@corp.com")


def test_certificate_for_unlisted_user_has_no_groups(
    gateway: GatewayProcess, keys: Keys, tmp_path: Path
) -> None:
    client = _cert_client(gateway, keys, tmp_path, "carol@corp.com", "-5m:+1h")
    assert client.ssh("idp:human:carol@corp.com+web-1", "id -un").stdout == b"sgtest\n"
    # ops-only is assigned to the ops group only; carol has none.
    refused = client.ssh("idp:human:carol@corp.com", "formal ops-only -- true")
    assert refused.stderr == b"sshgate: no native user for you on ops-only\n"


@pytest.mark.parametrize(
    ("principal", "validity"),
    [("bob@corp.com", "-5m:+1h"), ("alice@corp.com", "-2h:-1h")],
    ids=["principal", "expired"],
)
def test_certificate_refused(
    gateway: GatewayProcess, keys: Keys, tmp_path: Path, principal: str, validity: str
) -> None:
    client = _cert_client(gateway, keys, tmp_path, principal, validity)
    result = client.ssh("idp:human:alice@corp.com+web-1", "true")
    assert result.returncode == 255
    assert b"Permission denied" in result.stderr


def test_connection_binds_to_first_resource(alice: Client, tmp_path: Path) -> None:
    """Channels multiplexed on one connection share its binding; another resource is refused."""
    sock = tmp_path / "mux.sock"
    mux = ["-o", f"ControlPath={sock}"]
    master = subprocess.Popen(alice.ssh_argv("alice", options=[*mux, "-M", "-N"]), stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock.exists(), "the ControlMaster did not come up"
        first = alice.ssh("alice", "formal web-1 -- echo one", options=mux)
        assert first.stdout == b"one\n", first.stderr
        again = alice.ssh("alice", "formal web-1 -- echo two", options=mux)
        assert again.stdout == b"two\n"
        other = alice.ssh("alice", "formal web-pinned -- echo three", options=mux)
        assert other.returncode == 1
        assert b"this connection is bound to web-1" in other.stderr
    finally:
        subprocess.run(alice.ssh_argv("alice", options=[*mux, "-O", "exit"]), capture_output=True, timeout=10)
        try:
            master.wait(timeout=10)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()


def test_sighup_reload_refuses_bad_config_and_applies_good(
    keys: Keys, upstream: Upstream, tmp_path: Path
) -> None:
    config = base_config(keys, upstream)
    gw = GatewayProcess(tmp_path / "gw", copy.deepcopy(config)).start()
    try:
        alice = Client(gw, keys.alice, tmp_path / "alice")
        gw.config_path.write_text("resources: [{name: x, type: ssh, bogus: 1}]\n")
        gw.signal(signal.SIGHUP)
        refused = gw.wait_event("config.reload", result="refused")
        assert "bogus" in refused["reason"]
        assert alice.ssh("alice+web-1", "echo still").stdout == b"still\n"
        renamed = copy.deepcopy(config)
        renamed["resources"][0]["name"] = "web-renamed"
        gw.write_config({**gw.config, **renamed})
        gw.signal(signal.SIGHUP)
        gw.wait_event("config.reload", result="ok")
        assert alice.ssh("alice+web-renamed", "echo new").stdout == b"new\n"
        assert b"unknown resource web-1" in alice.ssh("alice+web-1", "true").stderr
    finally:
        gw.stop()


def test_host_key_generated_once_and_kept(keys: Keys, upstream: Upstream, tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path / "gw", base_config(keys, upstream)).start()
    first = gw.host_pub()
    alice = Client(gw, keys.alice, tmp_path / "alice")
    assert gw.stop() == 0
    gw.config["listen"] = {"host": "127.0.0.1", "port": gw.port}
    gw.write_config(gw.config)
    gw.start()
    try:
        assert gw.host_pub() == first
        assert alice.ssh("alice+web-1", "echo same-key").stdout == b"same-key\n"
    finally:
        gw.stop()


def test_sighup_applies_new_recording_settings_to_new_sessions_only(
    keys: Keys, upstream: Upstream, tmp_path: Path
) -> None:
    """A session open across the reload keeps recording where it started, and ends closed there."""
    config = base_config(keys, upstream)
    config["recording"] = {"dir": str(tmp_path / "before")}
    gw = GatewayProcess(tmp_path / "gw", copy.deepcopy(config)).start()
    try:
        alice = Client(gw, keys.alice, tmp_path / "alice")
        open_session = subprocess.Popen(
            alice.ssh_argv("alice+web-1", "read line; echo got $line"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        first = gw.wait_event("channel.open", resource="web-1")["session_id"]
        gw.write_config({**gw.config, "recording": {"dir": str(tmp_path / "after")}})
        gw.signal(signal.SIGHUP)
        gw.wait_event("config.reload", result="ok")
        assert alice.ssh("alice+web-1", "echo second").stdout == b"second\n"
        out, _ = open_session.communicate(b"first\n", timeout=30)
        assert out == b"got first\n"
        second = next(e["session_id"] for e in gw.events("session.start") if e["session_id"] != first)
        assert _closed_recordings(tmp_path / "before", 1) == {first}
        assert _closed_recordings(tmp_path / "after", 1) == {second}
        gw.write_config({**gw.config, "recording": {"signing_key": str(tmp_path / "missing_key")}})
        gw.signal(signal.SIGHUP)
        refused = gw.wait_event("config.reload", result="refused")
        assert "missing_key" in refused["reason"]
        assert alice.ssh("alice+web-1", "echo third").stdout == b"third\n"
        assert len(_closed_recordings(tmp_path / "after", 2)) == 2
    finally:
        gw.stop()


def _closed_recordings(root: Path, count: int, timeout: float = 15) -> set[str]:
    """Ids of the sessions under ``root`` whose session.json says closed, once ``count`` are."""
    deadline = time.monotonic() + timeout
    while True:
        closed = {
            doc.parent.name
            for doc in root.glob("[0-9]*/*/session.json")
            if json.loads(doc.read_text())["status"] == "closed"
        }
        if len(closed) >= count or time.monotonic() > deadline:
            return closed
        time.sleep(0.1)
