"""EC2 Instance Connect: a fresh key for one login, accepted by the instance's sshd for 60 s."""

from __future__ import annotations

import asyncssh

from sshgate.aws.clients import AwsClients, Credentials, call
from sshgate.native_secret import PrivateKey


async def push_instance_connect_key(
    clients: AwsClients,
    name: str,
    instance_id: str,
    region: str | None,
    credentials: Credentials | None,
    user: str,
) -> PrivateKey:
    """Generate a key and push its public half for ``user``; raises ``AwsError``."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    eic = clients.client("ec2-instance-connect", region, credentials)
    await call(
        f"pushing a key to {name} with EC2 Instance Connect",
        eic.send_ssh_public_key,
        InstanceId=instance_id,
        InstanceOSUser=user,
        SSHPublicKey=key.export_public_key().decode(),
    )
    return PrivateKey(key)
