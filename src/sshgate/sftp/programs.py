"""Which exec commands start an sftp server (``sftp -s /usr/lib/openssh/sftp-server``): those
channels are the sftp subsystem by another road, so they are gated and recorded as sftp (docs/policy.md).

Only the system install paths count, with plain option words: a program the user could have
written (``~/sftp-server``) or a shell line that does more (``sftp-server; rm x``) stays an exec
command, asked of the request rule as one. Pure; no I/O.
"""

from __future__ import annotations

import re

SFTP_SERVER_PATHS = frozenset(
    {
        "/usr/lib/openssh/sftp-server",  # Debian, Ubuntu
        "/usr/libexec/openssh/sftp-server",  # RHEL, Fedora, Amazon Linux
        "/usr/lib/ssh/sftp-server",  # Alpine, Arch, SUSE
        "/usr/libexec/ssh/sftp-server",  # SUSE
        "/usr/libexec/sftp-server",  # OpenBSD, macOS
        "/usr/lib/sftp-server",
        "/usr/local/libexec/sftp-server",  # FreeBSD ports
    }
)

# Words with no character a shell treats specially, separated by spaces only (a newline or a
# tab would start or continue another command): sftp-server's -d, -l, -f, -u, -P... options.
_PLAIN_LINE = re.compile(r"[A-Za-z0-9_.,:=@%/+ -]*")


def is_sftp_server(command: str) -> bool:
    """True when ``command`` runs a system sftp-server, optionally after ``exec``, with plain options."""
    if not _PLAIN_LINE.fullmatch(command):
        return False
    words = command.split()
    if words[:1] == ["exec"]:
        words = words[1:]
    return bool(words) and words[0] in SFTP_SERVER_PATHS
