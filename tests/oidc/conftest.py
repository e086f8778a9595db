"""A real OpenID provider, gateways that sign people in with it, and ssh clients that read the
sign-in lines off stderr the way a person at a terminal would."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Keys, Upstream, base_config, ssh_resource
from tests.support.gateway import Client, GatewayProcess, user_key
from tests.support.oidc import CLIENT_SECRET, OidcProvider, sign_in_lines

POLICY = """package formal.v2
import rego.v1

# web-mfa asks everyone for a fresh sign-in; people of the provider need the engineers group
# (and reach the policy as signed-in users); everyone else is allowed.
session := {"action": "mfa"} if {
  input.resource.name == "web-mfa"
} else := {"action": "allow"} if {
  input.user.provider != "okta"
} else := {"action": "allow"} if {
  "engineers" in input.user.groups
  input.connection.auth_method == "oidc"
  input.user.signed_in_at
} else := {"action": "block", "type": "block_with_formal_message", "message": "engineers only"}
"""


@pytest.fixture(scope="session")
def provider() -> Iterator[OidcProvider]:
    server = OidcProvider()
    yield server
    server.stop()


def oidc_block(issuer: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "okta",
        "issuer": issuer,
        "client_id": "sshgate",
        "client_secret": "ENV:OIDC_CLIENT_SECRET",
        "allowed_domains": ["corp.com"],
        "sign_in_timeout_s": 60,
        "mfa": {"max_age_s": 300},
        **overrides,
    }


GatewayFactory = Callable[..., GatewayProcess]


@pytest.fixture(scope="session")
def oidc_gateway_factory(
    keys: Keys, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayFactory]:
    """Start a gateway whose identities.oidc is ``oidc`` (None: no provider at all)."""
    started: list[GatewayProcess] = []

    def start(oidc: dict[str, Any] | None, state: dict[str, Any] | None = None, **limits: Any) -> GatewayProcess:
        root = tmp_path_factory.mktemp("oidc-gateway")
        (root / "policy.rego").write_text(POLICY)
        config = base_config(keys, upstream)
        key_secret = f"FILE:{upstream.sshd.native_key}"
        config["resources"].append(
            ssh_resource("web-mfa", upstream, [{"username": "sgtest", "secret": key_secret, "default": True}])
        )
        if oidc is not None:
            config["identities"]["oidc"] = oidc
        config["policies"] = {"paths": [str(root / "policy.rego")]}
        config["limits"].update(limits)
        if state is not None:
            config["state"] = state
        proc = GatewayProcess(
            root,
            config,
            env={"SGRO_PASSWORD": upstream.sshd.password, "OIDC_CLIENT_SECRET": CLIENT_SECRET},
        )
        started.append(proc.start())
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def oidc_gateway(oidc_gateway_factory: GatewayFactory, provider: OidcProvider) -> GatewayProcess:
    return oidc_gateway_factory(oidc_block(provider.issuer))


class SshRun:
    """One ``ssh`` (or scp, sftp, rsync) whose stderr is read while it runs."""

    def __init__(self, argv: list[str], stdin: bytes = b"") -> None:
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.stderr = b""
        self.stdout = b""
        assert self.process.stdin is not None
        self.process.stdin.write(stdin)
        self.process.stdin.close()
        self._threads = [
            threading.Thread(target=self._pump, args=("stderr",), daemon=True),
            threading.Thread(target=self._pump, args=("stdout",), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self, name: str) -> None:
        stream = getattr(self.process, name)
        while chunk := stream.read1(65536):
            setattr(self, name, getattr(self, name) + chunk)

    def wait_stderr(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.stderr:
            if time.monotonic() > deadline or (self.process.poll() is not None and not self._alive()):
                raise AssertionError(f"{text!r} not on stderr: {self.stderr!r}")
            time.sleep(0.02)
        return self.stderr.decode()

    def _alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def sign_in_lines(self, timeout: float = 20.0) -> tuple[str, str, str]:
        self.wait_stderr("or open ", timeout)
        self.wait_stderr("\n", 1)
        return sign_in_lines(self.stderr.decode())

    def finish(self, timeout: float = 60.0) -> int:
        code = self.process.wait(timeout)
        for thread in self._threads:
            thread.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.finish()


def start_ssh(client: Client, login: str, *args: str, options: tuple[str, ...] = ()) -> SshRun:
    return SshRun(client.ssh_argv(login, *args, options=options))


def fresh_client(gateway: GatewayProcess, root: Path, name: str) -> Client:
    """A person's laptop with a key the gateway has never seen."""
    return Client(gateway, user_key(root, name), root / f"client-{name}")
