"""Bytes through the gateway stay exact under every cipher it offers, across rekeys in the middle of
a transfer on both legs: AES-GCM and chacha20-poly1305 take ssh_packet_path's lean path, aes128-ctr
asyncssh's own (the fallback). Real OpenSSH client and sshd; the gateway is a real process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Keys, Upstream, base_config, ssh_resource
from tests.support.gateway import Client, GatewayProcess
from tests.support.sshd import Sshd, start_sshd

CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr"]
SIZE = 6 * 1024 * 1024 + 4099  # several rekeys at 1 MB, and a last packet that is not full
KEXINIT_SENT = "SSH2_MSG_KEXINIT sent"


def resource_name(cipher: str) -> str:
    return "only-" + cipher.split("@")[0]


@pytest.fixture(scope="module")
def cipher_sshds() -> Iterator[dict[str, Sshd]]:
    """One sshd per cipher, which it alone accepts, rekeying every megabyte and logging each kex."""
    root = Path(tempfile.mkdtemp(prefix="sshgate-ciphers-"))
    root.chmod(0o755)
    servers: dict[str, Sshd] = {}
    try:
        for cipher in CIPHERS:
            lines = f"Ciphers {cipher}\nRekeyLimit 1M\nLogLevel DEBUG1\n"
            servers[cipher] = start_sshd(root / resource_name(cipher), first_lines=lines)
        yield servers
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cipher_gateway(
    keys: Keys, upstream: Upstream, cipher_sshds: dict[str, Sshd], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("cipher-gateway")
    config = base_config(keys, upstream)
    for cipher, server in cipher_sshds.items():
        known = root / f"{resource_name(cipher)}.known_hosts"
        known.write_text(server.known_hosts_line())
        secret = f"FILE:{server.native_key}"
        up = Upstream(server, known, upstream.cert_secret_file)
        config["resources"].append(
            ssh_resource(
                resource_name(cipher), up, [{"username": "sgtest", "secret": secret, "default": True}]
            )
        )
    gw = GatewayProcess(root / "gw", config).start()
    yield gw
    gw.stop()


def kexinits(server: Sshd) -> int:
    return (server.root / "sshd.log").read_text(errors="replace").count(KEXINIT_SENT)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_bulk_both_ways_byte_exact_with_rekeys_on_both_legs(
    cipher: str,
    cipher_gateway: GatewayProcess,
    cipher_sshds: dict[str, Sshd],
    keys: Keys,
    remote_dir: Path,
    tmp_path: Path,
) -> None:
    client = Client(cipher_gateway, keys.alice, tmp_path / "client")
    login = f"alice+{resource_name(cipher)}"
    leg = ["-c", cipher, "-o", "RekeyLimit=1M", "-o", "LogLevel=DEBUG1"]
    sent = os.urandom(SIZE)
    server = cipher_sshds[cipher]
    upstream_kex_before = kexinits(server)

    up = client.ssh(login, f"cat > {remote_dir}/up.bin", input=sent, options=leg)
    assert up.returncode == 0, up.stderr[-2000:]
    assert (remote_dir / "up.bin").read_bytes() == sent
    assert up.stderr.decode(errors="replace").count(KEXINIT_SENT) >= 4  # client leg rekeyed

    down = client.ssh(login, f"cat {remote_dir}/up.bin", options=leg)
    assert down.returncode == 0, down.stderr[-2000:]
    assert down.stdout == sent
    assert down.stderr.decode(errors="replace").count(KEXINIT_SENT) >= 4

    # stderr rides CHANNEL_EXTENDED_DATA, which the lean path delivers too
    err = client.ssh(login, f"cat {remote_dir}/up.bin >&2", options=["-c", cipher])
    assert err.returncode == 0
    assert err.stderr == sent and err.stdout == b""

    # the upstream leg rekeyed too (sshd counts both directions against its RekeyLimit)
    assert kexinits(server) - upstream_kex_before >= 3 * 4


GATEWAY_REKEYS = """
import asyncio, hashlib, json, sys
import asyncssh
from asyncssh.connection import SSHConnection
from sshgate import asyncssh_tuning
assert asyncssh_tuning.apply()
kexinits = []
send_kexinit = SSHConnection._send_kexinit
def counting(self):
    kexinits.append(1)
    send_kexinit(self)
SSHConnection._send_kexinit = counting
async def main(port, key, path, cipher):
    sent = open(path, "rb").read()
    async with asyncssh.connect("127.0.0.1", port, username="sgtest", client_keys=[key], known_hosts=None,
                                encryption_algs=[cipher], compression_algs=None, agent_path=None,
                                config=None, rekey_bytes=1 << 20) as conn:
        up = await conn.run("sha256sum", input=sent, encoding=None, check=True)
        down = await conn.run(f"cat {path}", encoding=None, check=True)
    return up.stdout.split()[0].decode() == hashlib.sha256(sent).hexdigest(), down.stdout == sent
print(json.dumps([asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])), len(kexinits)]))
"""


@pytest.mark.parametrize("cipher", ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr"])
def test_rekeys_the_gateway_starts_by_bytes_sent(sshd: Sshd, remote_dir: Path, cipher: str) -> None:
    """The upstream leg is asyncssh: with ``rekey_bytes`` its sender (the lean one under an AEAD)
    counts what it sent and starts key exchanges in the middle of a transfer, bytes intact."""
    data = remote_dir / "data.bin"
    data.write_bytes(os.urandom(SIZE))
    data.chmod(0o644)
    done = subprocess.run(
        [sys.executable, "-c", GATEWAY_REKEYS, str(sshd.port), str(sshd.native_key), str(data), cipher],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (up_exact, down_exact), kexinits = json.loads(done.stdout)
    assert up_exact and down_exact
    assert kexinits >= 1 + 5, kexinits  # the first exchange, then one per megabyte sent (6 MB up)
