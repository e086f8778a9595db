"""A protocol-faithful emulator of AWS Session Manager's service and agent side, plus moto for the rest.

Start it in-process with ``Emulator`` (see ``server``) or as the ``sshgate-aws-emulator`` command.
"""

from sshgate.ssm.emulator.faults import Faults
from sshgate.ssm.emulator.server import DEFAULT_AGENT_VERSION, Emulator

__all__ = ["DEFAULT_AGENT_VERSION", "Emulator", "Faults"]
