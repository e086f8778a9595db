"""A protocol-faithful emulator of AWS Session Manager's service and agent side, plus moto for the rest.

Start it in-process with ``Emulator`` (see ``server``) or as the ``sshgate-aws-emulator`` command.

Known differences from the live service, all chosen to keep tests fast or safe:
* when a client resumes on a new websocket, every unacked output message is resent at once (the
  agent alone would resend oldest-first at its RTO pace, which makes a resume take seconds);
* NonInteractiveCommands output is streamed as the command writes it (the agent streams merged
  output from a file, after the command exits, when ``separateOutputStream`` is off);
* port destinations must be loopback addresses;
* KMS is not emulated: with ``kms_key_id`` set the handshake asks for it, and the session then fails;
* a session whose client stays away longer than ``reconnect_window`` (120 s) is ended;
* EC2 Instance Connect keys are served without the signed metadata lines the live service adds.
"""

from sshgate.ssm.emulator.faults import Faults
from sshgate.ssm.emulator.server import DEFAULT_AGENT_VERSION, Emulator

__all__ = ["DEFAULT_AGENT_VERSION", "Emulator", "Faults"]
