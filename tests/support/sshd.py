"""A private OpenSSH sshd on 127.0.0.1: its own host key, test accounts, password, keys and a user CA."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import free_port, wait_port

SSHD = "/usr/sbin/sshd"
ACCOUNTS = ("sgtest", "sgro", "devops")
# The AuthorizedKeysCommand, standing in for EC2 Instance Connect's eic_run_authorized_keys: print
# the live keys pushed for user argv[2], read from the instance-metadata URL in file argv[1] (the
# AWS emulator's; no file, no keys).
_KEYS_COMMAND = """#!{python}
import sys
import urllib.request
from pathlib import Path

url_file, user = Path(sys.argv[1]), sys.argv[2]
if url_file.is_file():
    with urllib.request.urlopen(f"{{url_file.read_text().strip()}}/{{user}}/", timeout=5) as reply:
        sys.stdout.write(reply.read().decode())
"""


def instance_connect_keys_command() -> Path:
    """sshd runs an AuthorizedKeysCommand only from a root-owned file with no group- or
    world-writable directory above it, which a checkout under /tmp is not: write it to /usr/local."""
    script = _KEYS_COMMAND.format(python=sys.executable)
    directory = Path("/usr/local/libexec/sshgate-tests")
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    path = directory / f"instance-connect-keys-{hashlib.sha256(script.encode()).hexdigest()[:16]}"
    if not path.exists():
        staged = path.with_name(f"{path.name}.{os.getpid()}")
        staged.write_text(script)
        staged.chmod(0o755)
        staged.replace(path)
    return path


def keygen(path: Path, comment: str = "") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True
    )
    return path


def sign_cert(
    ca: Path, pub: Path, identity: str, principals: str, validity: str = "-5m:+1h", extra: Sequence[str] = ()
) -> Path:
    """``extra``: more ssh-keygen options, e.g. ``-z SERIAL`` or ``-O source-address=...``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca), "-I", identity, "-n", principals, "-V", validity, *extra, str(pub)],
        check=True,
        capture_output=True,
    )
    return Path(str(pub).removesuffix(".pub") + "-cert.pub")


def ensure_account(name: str, password: str) -> None:
    """Create a local login account (the tests run as root, as CI does) and set its password."""
    if subprocess.run(["id", name], capture_output=True).returncode != 0:
        made = subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], capture_output=True)
        if made.returncode != 0 and subprocess.run(["id", name], capture_output=True).returncode != 0:
            raise RuntimeError(f"useradd {name}: {made.stderr.decode(errors='replace')}")  # not a concurrent run's
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)


PASSWORD_FILE = Path("/var/lib/sshgate-tests/password")


def shared_test_password() -> str:
    """One random password per machine, kept root-only: concurrent test and benchmark runs share the
    local test accounts, and a fresh password per run logged the other run's sessions out."""
    PASSWORD_FILE.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not PASSWORD_FILE.exists():
        tmp = PASSWORD_FILE.with_name(f"password.{os.getpid()}")
        tmp.write_text("pw-" + secrets.token_hex(12))
        tmp.chmod(0o600)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, PASSWORD_FILE)  # atomic: the first run's password wins
        tmp.unlink()
    return PASSWORD_FILE.read_text().strip()


@dataclass
class Sshd:
    root: Path
    port: int
    host_key: Path
    user_ca: Path
    native_key: Path
    host_ca: Path
    password: str
    process: subprocess.Popen[bytes]

    @property
    def host_ca_pub(self) -> str:
        return Path(str(self.host_ca) + ".pub").read_text().strip()

    @property
    def host_pub(self) -> str:
        return Path(str(self.host_key) + ".pub").read_text().strip()

    @property
    def instance_connect_url_file(self) -> Path:
        """Write an instance-metadata URL here and sshd also accepts the keys pushed to it."""
        return self.root / "instance-connect-url"

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_pub}\n"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_sshd(root: Path, first_lines: str = "") -> Sshd:
    """A real sshd on 127.0.0.1; ``first_lines`` of sshd_config win over the defaults below (sshd
    keeps the first value it reads for a keyword)."""
    root.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)
    host_key = keygen(root / "host_ed25519", "upstream-host")
    user_ca = keygen(root / "user_ca", "upstream-user-ca")
    native_key = keygen(root / "native_ed25519", "native")
    host_ca = keygen(root / "host_ca", "upstream-host-ca")
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-s",
            str(host_ca),
            "-I",
            "upstream-host",
            "-h",
            "-n",
            "127.0.0.1",
            f"{host_key}.pub",
        ],
        check=True,
        capture_output=True,
    )
    password = shared_test_password()
    auth_dir = root / "authorized_keys"
    auth_dir.mkdir()
    for account in ACCOUNTS:
        ensure_account(account, password)
        (auth_dir / account).write_text(Path(str(native_key) + ".pub").read_text())
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        f"""{first_lines}Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
HostCertificate {host_key}-cert.pub
PidFile {root / "sshd.pid"}
AuthorizedKeysFile {auth_dir}/%u
TrustedUserCAKeys {user_ca}.pub
AuthorizedKeysCommand {instance_connect_keys_command()} {root / "instance-connect-url"} %u
AuthorizedKeysCommandUser root
StrictModes no
UsePAM no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin no
AllowTcpForwarding yes
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
MaxStartups 200:30:400
MaxSessions 200
LogLevel ERROR
"""
    )
    log = open(root / "sshd.log", "wb")  # noqa: SIM115 - owned by the process for its lifetime
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    wait_port(port)
    os.environ.pop("SSH_AUTH_SOCK", None)
    return Sshd(root, port, host_key, user_ca, native_key, host_ca, password, process)
