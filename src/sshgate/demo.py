"""``sshgate demo``: the gateway plus an in-process upstream and a generated configuration."""

from __future__ import annotations

import asyncio
import socket
import tempfile
from pathlib import Path

import asyncssh
import yaml

from sshgate import asyncssh_checks, asyncssh_tuning
from sshgate.config import load_config
from sshgate.demo_upstream import start_demo_upstream
from sshgate.gateway.server import Gateway

DEMO_EMAIL = "demo@example.com"


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    path.write_text(text)
    path.chmod(mode)


def _web_port(wanted: int) -> int:
    """The web app's port, known before start-up: its URL goes into the configuration."""
    if wanted:
        return wanted
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_demo(port: int = 2222, workdir: str | None = None, web_port: int = 8080) -> None:
    with tempfile.TemporaryDirectory(prefix="sshgate-demo-", dir=workdir) as tmp:
        root = Path(tmp)
        home = root / "upstream-home"
        home.mkdir()
        (home / "README.txt").write_text("You are on the demo upstream, reached through sshgate.\n")
        upstream_host_key = asyncssh.generate_private_key("ssh-ed25519")
        gateway_to_upstream = asyncssh.generate_private_key("ssh-ed25519")
        user_key = asyncssh.generate_private_key("ssh-ed25519", comment=DEMO_EMAIL)
        user_key.write_private_key(str(root / "demo_user_key"))
        (root / "demo_user_key").chmod(0o600)
        upstream = await start_demo_upstream(home, "demo", gateway_to_upstream, upstream_host_key)
        upstream_port = upstream.sockets[0].getsockname()[1]
        web_url = f"http://127.0.0.1:{_web_port(web_port)}"
        config = {
            "listen": {"host": "127.0.0.1", "port": port},
            "data_dir": str(root / "data"),
            "metrics": {"listen": None},
            "web": {
                "listen": web_url.removeprefix("http://"),
                "public_url": web_url,
                "admin_groups": ["dev"],
            },
            "identities": {
                "users": [
                    {
                        "email": DEMO_EMAIL,
                        "login": "demo",
                        "groups": ["dev"],
                        "authorized_keys": [user_key.export_public_key().decode().strip()],
                    }
                ]
            },
            "resources": [
                {
                    "name": "demo",
                    "type": "ssh",
                    "hostname": "127.0.0.1",
                    "port": upstream_port,
                    "host_key_policy": {
                        "host_keys": [upstream_host_key.export_public_key().decode().strip()]
                    },
                    "tags": {"env": "demo"},
                    "native_users": [
                        {"username": "demo", "secret": f"FILE:{root / 'upstream_key'}", "default": True}
                    ],
                }
            ],
        }
        _write(root / "upstream_key", gateway_to_upstream.export_private_key().decode())
        _write(root / "sshgate.yaml", yaml.safe_dump(config, sort_keys=False))
        asyncssh_checks.apply()
        asyncssh_tuning.apply()
        gateway = Gateway(load_config(root / "sshgate.yaml"), str(root / "sshgate.yaml"))
        try:
            await gateway.start()
            host_key = asyncssh.read_public_key(str(gateway.config.host_key_paths[0]) + ".pub")
            known = root / "known_hosts"
            known.write_text(f"[127.0.0.1]:{gateway.port} {host_key.export_public_key().decode().strip()}\n")
            ssh = (
                f"ssh -i {root / 'demo_user_key'} -o UserKnownHostsFile={known} -o IdentitiesOnly=yes "
                f"-p {gateway.port}"
            )
            assert gateway.web is not None
            link = await gateway.web.one_time_link(DEMO_EMAIL)
            print(
                f"""
sshgate demo is running (Ctrl-C stops it). Configuration: {root / "sshgate.yaml"}

  Interactive shell:   {ssh} demo+demo@127.0.0.1
  One command:         {ssh} demo@127.0.0.1 formal demo -- uname -a
  What you may reach:  {ssh} demo@127.0.0.1 formal list
  Sessions web app:    {link}
                       (a one-time sign-in link as {DEMO_EMAIL}, admin; valid for 5 minutes)
""",
                flush=True,
            )
            await asyncio.Event().wait()
        finally:
            await gateway.stop()
            upstream.close()
            await upstream.wait_closed()
