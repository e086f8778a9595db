"""EC2 Instance Connect, which moto answers without keeping the key.

``SendSSHPublicKey`` is served here: the key is checked as the service does (an RSA or Ed25519
OpenSSH public key, a valid OS user name, a running instance) and kept for 60 seconds. An instance
reads its pushed keys from instance metadata (``eic_run_authorized_keys``, an sshd
AuthorizedKeysCommand); the emulator serves that path per instance, at
``/_emulator/instances/<id>/latest/meta-data/managed-ssh-keys/active-keys/<user>/``, as one
authorized_keys line per live key. The live service also wraps each key in signed metadata lines,
which the emulator leaves out.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

from moto.ec2.models import ec2_backends

from sshgate.ssm.emulator.aws import ApiError, Caller

EIC_PREFIX = "AWSEC2InstanceConnectService."
KEY_TTL = 60.0
KEY_TYPES = frozenset({"ssh-rsa", "ssh-ed25519"})
_OS_USER = re.compile(
    r"(^[A-Za-z_][A-Za-z0-9@._-]{0,30}[A-Za-z0-9$_-]?$)|(^(?=.{2,32}$)[0-9]{1,32}[A-Za-z@._-][A-Za-z0-9@._-]*[A-Za-z0-9$_-]?$)"
)
_INSTANCE_ID = re.compile(r"^i-[a-f0-9]+$")


def _key_line(text: str) -> str:
    """``type base64`` of an OpenSSH public key whose blob names the same type, else InvalidArgs."""
    parts = text.split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise ApiError("InvalidArgsException", "Unsupported or invalid SSH public key format.")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        named = blob[4 : 4 + length].decode()
    except (binascii.Error, struct.error, UnicodeDecodeError):
        named = ""
    if named != parts[0]:
        raise ApiError("InvalidArgsException", "Unsupported or invalid SSH public key format.")
    return f"{parts[0]} {parts[1]}"


class InstanceConnect:
    """The keys pushed per (instance, OS user), each live for ``ttl`` seconds."""

    def __init__(self, ttl: float = KEY_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._keys: dict[tuple[str, str], list[tuple[float, str]]] = {}

    def send_ssh_public_key(self, caller: Caller, body: Mapping[str, Any]) -> dict[str, Any]:
        instance_id = str(body.get("InstanceId", ""))
        user = str(body.get("InstanceOSUser", ""))
        key = str(body.get("SSHPublicKey", ""))
        if not _INSTANCE_ID.match(instance_id) or not 10 <= len(instance_id) <= 32:
            raise ApiError("InvalidArgsException", f"Invalid instance id {instance_id!r}.")
        if not _OS_USER.match(user) or len(user) > 32:
            raise ApiError("InvalidArgsException", f"Invalid OS user {user!r}.")
        if not 80 <= len(key) <= 4096:
            raise ApiError("InvalidArgsException", "The SSH public key must be 80 to 4096 characters.")
        line = _key_line(key)
        try:
            instance = ec2_backends[caller.account][caller.region].get_instance(instance_id)
        except Exception:
            raise ApiError("EC2InstanceNotFoundException", f"Instance {instance_id} not found.") from None
        if instance.instance_state.name != "running":
            raise ApiError(
                "EC2InstanceStateInvalidException",
                f"Instance {instance_id} is {instance.instance_state.name}, not running.",
            )
        now = self.clock()
        live = [(t, k) for t, k in self._keys.get((instance_id, user), []) if t > now]
        live.append((now + self.ttl, line))
        self._keys[(instance_id, user)] = live
        return {"RequestId": secrets.token_hex(16), "Success": True}

    def active_keys(self, instance_id: str, user: str) -> list[str]:
        now = self.clock()
        return [k for t, k in self._keys.get((instance_id, user), []) if t > now]
