"""What ``formal list`` and ``formal ssh-config`` print (docs/login.md), built without I/O.

Everything here ends up in a user's terminal or ``~/.ssh/config``, and tags and names can come
from AWS (discovery), so every field is reduced to printable text and every ssh_config value is
quoted when it holds anything but the characters of a login.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

KNOWN_HOSTS_FILE = "~/.ssh/sshgate_known_hosts"
KNOWN_HOSTS_MARK = "# sshgate_known_hosts: "
SERVER_ALIVE_INTERVAL_S = 30
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9._@:+/-]+")


@dataclass(frozen=True, slots=True)
class Listed:
    """One resource the caller may use, as the listing shows it."""

    name: str
    type: str
    native_user: str
    login: str = ""
    state: str = "-"
    region: str = "-"
    tags: Mapping[str, str] = field(default_factory=dict)
    sshd: bool = True  # stdin/stdout reach a real sshd (ssh resources, EC2 with `ssh:`)


def printable(text: str) -> str:
    """Control characters (tabs and escapes included) become '?': fields stay one column, and
    nothing read from AWS can drive the user's terminal."""
    return "".join(ch if ch.isprintable() else "?" for ch in text) or "-"


def list_text(rows: Sequence[Listed], detailed: bool = False) -> str:
    """``name<TAB>type<TAB>native-user`` per line; ``detailed`` adds state, region and tags."""
    lines = []
    for row in rows:
        fields = [row.name, row.type, row.native_user]
        if detailed:
            tags = ",".join(f"{k}={v}" for k, v in sorted(row.tags.items()))
            fields += [row.state, row.region, tags]
        lines.append("\t".join(printable(f) for f in fields) + "\n")
    return "".join(lines)


def known_hosts_name(host: str, port: int) -> str:
    """How OpenSSH names ``host:port`` in known_hosts."""
    return host if port == 22 else f"[{host}]:{port}"


def _value(text: str) -> str:
    """An ssh_config argument: OpenSSH splits on blanks and reads quotes and ``#`` specially."""
    if _PLAIN_VALUE.fullmatch(text):
        return text
    return '"' + printable(text).replace("\\", "?").replace('"', "?") + '"'


@dataclass(frozen=True, slots=True)
class GatewayAddress:
    """Where clients reach the gateway and the host keys they should pin."""

    host: str
    port: int
    host_keys: Sequence[str]


def ssh_config_text(
    rows: Sequence[Listed], gateway: GatewayAddress, who: str, prefix: str, vscode: bool = False
) -> str:
    """A shared ``Host <prefix>*`` block (address, pinned host key, keepalives) and one
    ``Host <prefix><resource>`` block per resource with ``User <login>+<resource>``."""
    name = known_hosts_name(gateway.host, gateway.port)
    out = [
        f"# sshgate: Host blocks for {printable(who)} (ssh <gateway> formal ssh-config).",
        f"# Save the gateway's host key to {KNOWN_HOSTS_FILE}: the lines starting with",
        f"# '{KNOWN_HOSTS_MARK.strip()}', without that mark, e.g. with",
        f"#   sed -n 's/^{KNOWN_HOSTS_MARK}//p' THIS_FILE >> {KNOWN_HOSTS_FILE}",
        # printable(): the address may come from a PROXY header, and a line break in it would end
        # the comment (a ProxyCommand on the next line runs on the user's machine).
        *(printable(f"{KNOWN_HOSTS_MARK}{name} {key}") for key in gateway.host_keys),
    ]
    if vscode:
        out += _vscode_settings(rows, prefix)
    out += [
        "",
        f"Host {prefix}*",
        f"  HostName {_value(gateway.host)}",
        f"  Port {gateway.port}",
        f"  UserKnownHostsFile {KNOWN_HOSTS_FILE}",
        "  StrictHostKeyChecking yes",
        f"  ServerAliveInterval {SERVER_ALIVE_INTERVAL_S}",
        "  ServerAliveCountMax 4",
    ]
    if vscode:
        # Remote-SSH runs its server without a terminal; a stopped instance may be started first.
        out += ["  RequestTTY no", "  ConnectTimeout 60"]
    for row in rows:
        out += ["", f"Host {prefix}{row.name}", f"  User {_value(row.login)}"]
    return "\n".join(out) + "\n"


def _vscode_settings(rows: Sequence[Listed], prefix: str) -> list[str]:
    """The Remote-SSH settings of docs/vscode-cursor.md, as comments (settings.json is JSON)."""
    exec_server = "true" if all(row.sshd for row in rows) else "false"
    platforms = ", ".join(f'"{prefix}{row.name}": "linux"' for row in rows)
    return [
        "#",
        "# VSCode / Cursor settings.json (docs/vscode-cursor.md):",
        '#   "remote.SSH.enableDynamicForwarding": true,',
        '#   "remote.SSH.useLocalServer": true,',
        '#   "remote.SSH.permitPtyAllocation": false,',
        f'#   "remote.SSH.useExecServer": {exec_server},',
        '#   "remote.SSH.connectTimeout": 120,',
        f'#   "remote.SSH.remotePlatform": {{{platforms}}}',
    ]
