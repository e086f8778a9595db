"""No password, token or private key used by the suite ever reaches the gateway's output."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import Keys, Upstream, base_config
from tests.support.gateway import Client, GatewayProcess


def _key_body_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("-----")]


def test_secrets_never_logged(keys: Keys, upstream: Upstream, tmp_path: Path) -> None:
    gw = GatewayProcess(
        tmp_path / "gw", base_config(keys, upstream), env={"SGRO_PASSWORD": upstream.sshd.password}
    )
    gw.start()
    try:
        alice = Client(gw, keys.alice, tmp_path / "alice")
        john = Client(gw, keys.john, tmp_path / "john")
        assert john.ssh("john+web-1", "id -un").stdout == b"sgro\n"  # upstream password via ENV:
        assert alice.ssh("alice+web-cert", "id -un").stdout == b"sgtest\n"  # key + certificate JSON
        assert alice.ssh("alice+web-1", "id -un").stdout == b"sgtest\n"  # key via FILE:
        askpass = tmp_path / "askpass.sh"
        wrong = "sgt_this-is-a-wrong-token-value"
        for secret in (keys.alice_token, wrong):
            askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' '{secret}'\n")
            askpass.chmod(0o700)
            subprocess.run(
                alice.ssh_argv(
                    "alice+web-1",
                    "true",
                    options=["-o", "BatchMode=no", "-o", "PreferredAuthentications=password"],
                ),
                env={
                    **os.environ,
                    "SSH_ASKPASS": str(askpass),
                    "SSH_ASKPASS_REQUIRE": "force",
                    "DISPLAY": ":0",
                },
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
            )
        gw.wait_event("auth.failure", method="password")
    finally:
        gw.stop()
    output = "".join(gw.raw)
    assert "auth.success" in output and "upstream.connect" in output
    secrets = [upstream.sshd.password, keys.alice_token, wrong]
    secrets += _key_body_lines(upstream.sshd.native_key) + _key_body_lines(keys.alice)
    secrets += [line for line in upstream.cert_secret_file.read_text().split("\\n") if len(line) > 40]
    leaked = [s for s in secrets if s and s in output]
    assert not leaked, f"{len(leaked)} secret(s) found in the gateway output"
