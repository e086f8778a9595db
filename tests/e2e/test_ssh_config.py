"""`formal ssh-config` output saved to a file and used as `ssh -F FILE` by the stock clients: ssh,
scp (both protocols), sftp, rsync and the VSCode flow reach resources by Host alias in BatchMode,
the gateway's host key pinned from the file's own comment line. `formal list --detailed` too."""

from __future__ import annotations

import filecmp
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Keys, Upstream, base_config
from tests.support.gateway import Client, GatewayProcess
from tests.support.vscode import remote_ssh_flow

POLICY = """package formal.v2

import rego.v1

session := {"action": "block", "type": "block_with_formal_message", "message": "not today"} if {
\tinput.resource.name == "web-insecure"
}
"""
SAVE_KNOWN_HOSTS = "sed -n 's/^# sshgate_known_hosts: //p' {config} >> {known_hosts}"


@pytest.fixture(scope="module")
def gw(keys: Keys, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("ssh-config-gw")
    (root / "policy.rego").write_text(POLICY)
    config = base_config(keys, upstream)
    config["policies"] = {"paths": [str(root / "policy.rego")]}
    gateway = GatewayProcess(root / "gw", config, env={"SGRO_PASSWORD": upstream.sshd.password}).start()
    yield gateway
    gateway.stop()


@dataclass
class Generated:
    """The saved config plus what stands in for the user's ~/.ssh: their key, the pinned key file."""

    text: str
    path: Path
    known_hosts: Path
    key: Path

    def options(self) -> list[str]:
        # The command line wins over the file: only the known_hosts location moves off ~/.ssh.
        return [
            *("-F", str(self.path), "-o", f"UserKnownHostsFile={self.known_hosts}", "-i", str(self.key)),
            *("-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"),
        ]

    def run(self, *argv: str, input: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        tool, *rest = argv
        return subprocess.run([tool, *self.options(), *rest], input=input, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def generated(gw: GatewayProcess, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Generated:
    root = tmp_path_factory.mktemp("alice-ssh-config")
    result = Client(gw, keys.alice, root / "bootstrap").ssh("alice", "formal ssh-config")
    assert (result.returncode, result.stderr) == (0, b""), gw.events("channel.error")
    path, known_hosts = root / "sshgate_config", root / "sshgate_known_hosts"
    path.write_bytes(result.stdout)
    command = SAVE_KNOWN_HOSTS.format(config=path, known_hosts=known_hosts)
    subprocess.run(["sh", "-c", command], check=True)
    return Generated(result.stdout.decode(), path, known_hosts, keys.alice)


def test_hosts_are_the_usable_resources_with_the_gateway_key_pinned(
    generated: Generated, gw: GatewayProcess
) -> None:
    hosts = re.findall(r"^Host (\S+)$", generated.text, re.M)
    # ops-only: no native user for alice; web-insecure: blocked by the policy.
    usable = [
        "web-1",
        "web-cert",
        "web-pinned",
        "web-hostca",
        "web-agent",
        "bad-password",
        "wrong-key",
        "down",
    ]
    assert hosts == ["sshgate-*", *(f"sshgate-{name}" for name in usable)]
    assert re.findall(r"^  User (\S+)$", generated.text, re.M) == [f"alice+{name}" for name in usable]
    assert f"  HostName 127.0.0.1\n  Port {gw.port}\n" in generated.text
    algorithm, key = gw.host_pub().split()[:2]
    assert generated.known_hosts.read_text() == f"[127.0.0.1]:{gw.port} {algorithm} {key}\n"
    listed = gw.wait_event("directory.listed", command="formal ssh-config")
    assert not gw.events("session.start", session_id=listed["session_id"])  # nothing was bound


def test_ssh_by_alias_with_the_pinned_key_only(generated: Generated) -> None:
    for alias in ("sshgate-web-1", "sshgate-web-pinned"):
        result = generated.run("ssh", alias, "id -un")
        assert (result.stdout, result.returncode) == (b"sgtest\n", 0), result.stderr
    generated.known_hosts.rename(generated.known_hosts.with_suffix(".saved"))
    try:
        refused = generated.run("ssh", "sshgate-web-1", "true")
        assert refused.returncode == 255 and b"Host key verification failed" in refused.stderr
    finally:
        generated.known_hosts.with_suffix(".saved").rename(generated.known_hosts)


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-protocol", "scp-protocol"])
def test_scp_to_two_resources(generated: Generated, remote_dir: Path, tmp_path: Path, legacy: bool) -> None:
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(300_000))
    mode = ["-O"] if legacy else []
    for alias in ("sshgate-web-1", "sshgate-web-cert"):
        up = generated.run("scp", *mode, str(local), f"{alias}:{remote_dir}/{alias}.bin")
        assert up.returncode == 0, up.stderr
        down = generated.run("scp", *mode, f"{alias}:{remote_dir}/{alias}.bin", str(tmp_path / alias))
        assert down.returncode == 0, down.stderr
        assert (tmp_path / alias).read_bytes() == local.read_bytes()
    assert sorted(p.name for p in remote_dir.iterdir()) == ["sshgate-web-1.bin", "sshgate-web-cert.bin"]


def test_sftp_to_two_resources(generated: Generated, remote_dir: Path, tmp_path: Path) -> None:
    local = tmp_path / "a.txt"
    local.write_text("over sftp\n")
    for alias in ("sshgate-web-1", "sshgate-web-hostca"):
        batch = f"cd {remote_dir}\nput {local} {alias}.txt\nls -1\n"
        result = generated.run("sftp", "-b", "-", alias, input=batch.encode())
        assert result.returncode == 0, result.stderr
        assert f"{alias}.txt".encode() in result.stdout
    assert (remote_dir / "sshgate-web-hostca.txt").read_text() == "over sftp\n"


def test_rsync_to_two_resources(generated: Generated, remote_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "data.bin").write_bytes(os.urandom(100_000))
    (src / "top.txt").write_text("top\n")
    shell = " ".join(["ssh", *generated.options()])
    for alias in ("sshgate-web-1", "sshgate-web-pinned"):
        result = subprocess.run(
            ["rsync", "-a", "-e", shell, f"{src}/", f"{alias}:{remote_dir}/{alias}/"],
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert not filecmp.dircmp(src, remote_dir / alias).diff_files


def test_vscode_flow_through_the_generated_config(generated: Generated) -> None:
    def argv(options: Sequence[str]) -> list[str]:
        return ["ssh", *generated.options(), *options, "sshgate-web-1", "bash"]

    remote_ssh_flow(argv)


def test_list_detailed(gw: GatewayProcess, keys: Keys, tmp_path: Path) -> None:
    alice = Client(gw, keys.alice, tmp_path)
    lines = alice.ssh("alice", "formal list --detailed").stdout.decode().splitlines()
    assert "web-1\tssh\tsgtest\t-\t-\tenv=prod" in lines
    assert not [line for line in lines if line.startswith(("web-insecure\t", "ops-only\t"))]
    john = Client(gw, keys.john, tmp_path / "john").ssh("john", "formal list").stdout.decode()
    assert "ops-only\tssh\tsgro\n" in john and "web-1\tssh\tsgro\n" in john
