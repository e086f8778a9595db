"""Runs ``sshgate serve`` as a real process and drives it with the real OpenSSH clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncssh
import yaml

from tests.support.sshd import keygen


class GatewayProcess:
    """One ``sshgate serve`` process; its JSON audit lines are collected as they arrive."""

    def __init__(self, root: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        config.setdefault("listen", {"host": "127.0.0.1", "port": 0})
        config.setdefault("data_dir", str(root / "data"))
        config.setdefault("metrics", {"listen": None})
        self.config = config
        self.config_path = root / "sshgate.yaml"
        self.write_config(config)
        self.env = {**os.environ, **(env or {})}
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def argv(self) -> list[str]:
        """The command that runs the gateway (benchmarks override it to vary the product)."""
        return [sys.executable, "-m", "sshgate.cli", "serve", "--config", str(self.config_path)]

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        self._ready.clear()
        self.process = subprocess.Popen(
            self.argv(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("gateway did not start:\n" + "".join(self.raw[-30:]))
        return self

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.raw.append(line)
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.lines.append(doc)
            if doc.get("event") == "gateway.listening":
                self.port = int(doc["port"])
                self._ready.set()

    def events(self, name: str, **match: Any) -> list[dict[str, Any]]:
        return [
            d for d in self.lines if d.get("event") == name and all(d.get(k) == v for k, v in match.items())
        ]

    def wait_event(self, name: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        return self.wait_events(name, 1, timeout, **match)[-1]

    def wait_events(self, name: str, count: int, timeout: float = 10.0, **match: Any) -> list[dict[str, Any]]:
        """At least ``count`` matching events (the audit output can trail what the client saw)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name, **match)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise TimeoutError(f"fewer than {count} {name} {match} in the audit log:\n" + "".join(self.raw[-20:]))

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def host_pub(self) -> str:
        return Path(str(Path(self.config["data_dir"]) / "ssh_host_ed25519_key") + ".pub").read_text().strip()


class Client:
    """Real OpenSSH clients pointed at one gateway with one identity key."""

    def __init__(self, gateway: GatewayProcess, key: Path, root: Path) -> None:
        self.gateway = gateway
        self.key = key
        root.mkdir(parents=True, exist_ok=True)
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{gateway.port} {gateway.host_pub()}\n")
        self.config = root / "ssh_config"
        self.config.write_text(
            f"""Host gw
  HostName 127.0.0.1
  Port {gateway.port}
  IdentityFile {key}
  IdentitiesOnly yes
  BatchMode yes
  UserKnownHostsFile {self.known_hosts}
  StrictHostKeyChecking yes
  LogLevel ERROR
  ConnectTimeout 10
  Ciphers aes128-gcm@openssh.com
"""
        )

    def ssh_argv(self, login: str, *args: str, options: Sequence[str] = ()) -> list[str]:
        return ["ssh", "-F", str(self.config), *options, "-o", f"User={login}", "gw", *args]

    def ssh(
        self,
        login: str,
        *args: str,
        input: bytes | None = None,
        options: Sequence[str] = (),
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.ssh_argv(login, *args, options=options),
            input=input if input is not None else b"",
            capture_output=True,
            timeout=timeout,
        )

    def password_ssh(
        self, login: str, secret: str, askpass_dir: Path, *args: str, options: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[bytes]:
        """One password attempt, answered by an SSH_ASKPASS script (no terminal needed)."""
        askpass_dir.mkdir(parents=True, exist_ok=True)
        script = askpass_dir / "askpass.sh"
        script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{secret}'\n")
        script.chmod(0o700)
        options = ["-o", "BatchMode=no", "-o", "PreferredAuthentications=password",
                   "-o", "NumberOfPasswordPrompts=1", *options]  # fmt: skip
        return subprocess.run(
            self.ssh_argv(login, *args, options=options),
            capture_output=True,
            timeout=30,
            env={**os.environ, "SSH_ASKPASS": str(script), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"},
            stdin=subprocess.DEVNULL,
        )

    def scp(
        self, login: str, *args: str, legacy: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        mode = ["-O"] if legacy else ["-s"]
        return subprocess.run(
            ["scp", "-F", str(self.config), *mode, "-o", f"User={login}", *args],
            capture_output=True,
            timeout=timeout,
        )

    def sftp(self, login: str, batch: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["sftp", "-F", str(self.config), "-o", f"User={login}", "-b", "-", "gw"],
            input=batch.encode(),
            capture_output=True,
            timeout=timeout,
        )

    def rsync(self, login: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["rsync", "-e", f"ssh -F {self.config} -o User={login}", *args],
            capture_output=True,
            timeout=timeout,
        )


def user_key(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}_ed25519"
    return path if path.exists() else keygen(path, name)


def pub(path: Path) -> str:
    return Path(str(path) + ".pub").read_text().strip()


@contextmanager
def control_master(argv: Callable[..., list[str]], sock: Path) -> Iterator[list[str]]:
    """An OpenSSH ControlMaster (``argv(login, options=...)`` builds its command); yields the
    options that multiplex later ``ssh`` runs over its one connection."""
    mux = ["-o", f"ControlPath={sock}"]
    master = subprocess.Popen(argv("alice", options=[*mux, "-M", "-N"]), stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock.exists(), "the ControlMaster did not come up"
        yield mux
    finally:
        subprocess.run(argv("alice", options=[*mux, "-O", "exit"]), capture_output=True, timeout=10)
        try:
            master.wait(timeout=10)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()


def asyncssh_login(gw: GatewayProcess, key: Path, login: str = "alice+web-1") -> Any:
    """An asyncssh client connection to ``gw`` as ``login`` (await it, or ``async with``): for
    what stock OpenSSH does not send, such as bytes it refuses or many channels on one connection."""
    return asyncssh.connect(
        "127.0.0.1", gw.port, username=login, client_keys=[str(key)],
        known_hosts=None, agent_path=None, config=None,
    )  # fmt: skip
