"""The gateway's own host keys: loaded from ``host_keys``, generated on first start if missing."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh


def load_or_create_host_keys(paths: list[Path]) -> list[asyncssh.SSHKey]:
    """Load each key; create a missing one as ed25519 (mode 0600) so restarts keep the same key."""
    keys = []
    for path in paths:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            key = asyncssh.generate_private_key("ssh-ed25519", comment="sshgate host key")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(key.export_private_key())
            key.write_public_key(str(path) + ".pub")
        keys.append(asyncssh.read_private_key(str(path)))
    return keys
