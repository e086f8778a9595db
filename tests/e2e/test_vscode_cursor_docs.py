"""docs/vscode-cursor.md, followed literally: every shell command in it runs as written (only the
example gateway address is replaced by the test gateway's), as a local account whose real home
is the `~` of the page, so `~/.ssh/config`, `Include`, the pinned key file and the default
identity are exactly what a new user gets. Then the editor's own flow runs through the result,
for an ssh resource and an ECS one (whose container has the page's `.ssh_inputrc`)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sshgate.config import parse_config
from tests.conftest import Keys, Upstream, base_config
from tests.support.emulator import aws_client, emulated_aws_gateway, emulator_process
from tests.support.gateway import GatewayProcess
from tests.support.net import free_port
from tests.support.sshd import ensure_account, shared_test_password
from tests.support.terminal import Terminal
from tests.support.vscode import remote_ssh_flow

DOC = Path(__file__).parents[2] / "docs" / "vscode-cursor.md"
ACCOUNT = "sgdocs"  # the reader: a local account, so `~` is a real home OpenSSH resolves
LOCK = Path("/var/lib/sshgate-tests/sgdocs.lock")  # concurrent runs share the account
EXAMPLE_GATEWAY = ("-p 2222 alice@gw.corp.com", "alice@gw.corp.com")


@dataclass
class Block:
    info: str
    text: str


def blocks() -> list[Block]:
    return [Block(m[0], m[1]) for m in re.findall(r"^```([^\n]*)\n(.*?)^```$", DOC.read_text(), re.M | re.S)]


def commands(info: str) -> list[str]:
    return [line for b in blocks() if b.info == info for line in b.text.splitlines() if line.strip()]


@dataclass
class Reader:
    home: Path
    port: int

    def local(self, command: str) -> str:
        """The page's command with the example gateway replaced by the test gateway."""
        assert EXAMPLE_GATEWAY[0] in command, command
        return command.replace(EXAMPLE_GATEWAY[0], f"-p {self.port} alice@127.0.0.1")

    def argv(self, *argv: str) -> list[str]:
        return ["runuser", "-u", ACCOUNT, "--", *argv]

    def run(self, command: str) -> subprocess.CompletedProcess[bytes]:
        env = {"PATH": os.environ["PATH"], "HOME": str(self.home), "LANG": "C.UTF-8"}
        return subprocess.run(
            self.argv("bash", "-euc", command),
            cwd=self.home / "work",
            env=env,
            capture_output=True,
            timeout=90,
        )


@pytest.fixture(scope="module")
def container_home() -> Iterator[Path]:
    """HOME of the emulator's shells, which play the ECS container."""
    home = Path(tempfile.mkdtemp(prefix="sshgate-container-"))
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def emulator(container_home: Path) -> Iterator[str]:
    with emulator_process(env={"HOME": str(container_home)}) as url:
        ecs = aws_client(url, "ecs")
        ecs.create_cluster(clusterName="prod")
        ecs.register_task_definition(
            family="api", containerDefinitions=[{"name": "app", "image": "busybox", "memory": 64}]
        )
        ecs.create_service(cluster="prod", serviceName="api", taskDefinition="api", desiredCount=1)
        ecs.run_task(cluster="prod", taskDefinition="api", launchType="FARGATE", group="service:api")
        yield url


def doc_resources() -> list[dict[str, Any]]:
    """The page's resource snippets, each of which must be a valid configuration on its own."""
    found = []
    for block in blocks():
        if block.info == "yaml":
            parse_config(block.text, str(DOC))
            found += yaml.safe_load(block.text)["resources"]
    return found


@pytest.fixture(scope="module")
def gw(
    emulator: str, keys: Keys, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = base_config(keys, upstream)
    web_1 = next(r for r in config["resources"] if r["name"] == "web-1")
    config["resources"] = [web_1, doc_resources()[-1]]  # api with the .ssh_inputrc wrapper
    port = free_port()
    config["listen"] = {"host": "127.0.0.1", "port": port}
    config["public_address"] = f"127.0.0.1:{port}"
    with emulated_aws_gateway(tmp_path_factory.mktemp("docs-gw"), config, emulator) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def reader(gw: GatewayProcess, keys: Keys) -> Iterator[Reader]:
    """A fresh home for the account: alice's key as its default identity, and the gateway's key
    already confirmed in ~/.ssh/known_hosts (the page's first prompt, answered)."""
    LOCK.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ensure_account(ACCOUNT, shared_test_password())
        home = Path(f"/home/{ACCOUNT}")
        for name in (".ssh", "work"):
            shutil.rmtree(home / name, ignore_errors=True)
        (home / ".ssh").mkdir(mode=0o700)
        (home / "work").mkdir()
        shutil.copy(keys.alice, home / ".ssh" / "id_ed25519")
        shutil.copy(f"{keys.alice}.pub", home / ".ssh" / "id_ed25519.pub")
        algorithm, key = gw.host_pub().split()[:2]
        (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{gw.port} {algorithm} {key}\n")
        subprocess.run(["chown", "-R", f"{ACCOUNT}:{ACCOUNT}", str(home)], check=True)
        yield Reader(home, gw.port)


@pytest.fixture(scope="module")
def followed(reader: Reader, container_home: Path) -> Reader:
    """Every `sh` command of the page in order; `sh container` ones inside the container."""
    for block in blocks():
        if block.info == "sh container":  # a heredoc: the block is one command
            subprocess.run(
                ["bash", "-euc", block.text], env={**os.environ, "HOME": str(container_home)}, check=True
            )
        elif block.info == "sh":
            for command in block.text.splitlines():
                if command.startswith("ssh -p"):
                    command = reader.local(command)
                result = reader.run(command)
                assert result.returncode == 0, (command, result.stderr)
    return reader


def test_the_commands_produce_a_working_setup(followed: Reader, gw: GatewayProcess) -> None:
    ssh = followed.home / ".ssh"
    config = (ssh / "sshgate_config").read_text()
    assert (
        "Host sshgate-web-1\n  User alice+web-1\n" in config
        and "Host sshgate-api\n  User alice+api\n" in config
    )
    algorithm, key = gw.host_pub().split()[:2]
    assert (ssh / "sshgate_known_hosts").read_text() == f"[127.0.0.1]:{gw.port} {algorithm} {key}\n"
    assert (ssh / "config").read_text().splitlines()[0] == "Include ~/.ssh/sshgate_config"
    work = followed.home / "work"
    hostname = Path("/etc/hostname").read_bytes()
    for copy in ("web-1.hostname", "web-1.sftp", "web-1.rsync"):
        assert (work / copy).read_bytes() == hostname, copy
    # The pinned file alone vouches for the gateway: with the confirmed key gone, it still works.
    (ssh / "known_hosts").rename(ssh / "known_hosts.confirmed")
    try:
        result = followed.run("ssh sshgate-web-1 uname -s")
        assert (result.returncode, result.stdout) == (0, b"Linux\n"), result.stderr
    finally:
        (ssh / "known_hosts.confirmed").rename(ssh / "known_hosts")


def test_settings_match_what_the_gateway_prints(followed: Reader) -> None:
    (settings_block,) = [b.text for b in blocks() if b.info == "json"]
    settings = json.loads(settings_block)
    generated = (followed.home / ".ssh" / "sshgate_config").read_text()
    for name, value in settings.items():
        assert f'#   "{name}": {json.dumps(value)},' in generated, name
    platforms = '"sshgate-web-1": "linux", "sshgate-api": "linux"'
    assert f'#   "remote.SSH.remotePlatform": {{{platforms}}}' in generated


@pytest.mark.parametrize("host", ["sshgate-web-1", "sshgate-api"])
def test_the_editor_flow_through_the_result(followed: Reader, host: str) -> None:
    def argv(options: Sequence[str]) -> list[str]:
        return followed.argv("ssh", *options, host, "bash")

    remote_ssh_flow(argv)


@pytest.mark.parametrize("how", ["terminal-check", "formal-shell"])
def test_cursor_inputrc_keeps_a_tab_a_tab_on_ecs(followed: Reader, how: str) -> None:
    """The page's check: in the wrapped bash, a TAB typed into a line is a TAB (no completion)."""
    assert "`ssh -t sshgate-api`" in DOC.read_text()
    command = (
        "ssh -t sshgate-api" if how == "terminal-check" else followed.local(commands("sh interactive")[0])
    )
    term = Terminal(followed.argv("bash", "-c", command))
    try:
        term.write("PS1='ecs> '\n")
        term.read_until("ecs> ")
        term.write("printf '%s\\n' \"a\tb\" | od -c\n")
        term.read_until(r"a\s+\\t\s+b")
        term.write("exit\n")
        assert term.wait(timeout=20) == 0
    finally:
        term.close()
