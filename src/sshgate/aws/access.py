"""The gateway's AWS access: clients, per-person role credentials, target lookups and starts."""

from __future__ import annotations

from sshgate.aws.clients import AwsClients
from sshgate.aws.credentials import RoleCache
from sshgate.aws.start import InstanceStarter
from sshgate.aws.targets import TargetLookup
from sshgate.config import Aws


class AwsAccess:
    """Built once per configuration; every connection's upstream planning shares it."""

    def __init__(self, config: Aws) -> None:
        self.clients = AwsClients(config)
        self.roles = RoleCache(self.clients)
        self.targets = TargetLookup(self.clients)
        self.starter = InstanceStarter(self.clients)
