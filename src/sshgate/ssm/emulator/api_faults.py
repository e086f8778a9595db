"""AWS API errors on demand: chosen actions answer as the live service does when it throttles or
when IAM denies, in that service's own error format (JSON 1.1 ``__type`` bodies for ECS and SSM,
query-protocol XML for EC2 and STS), so botocore parses them exactly as it would from AWS.

``failing`` maps ``service:Action`` (``ec2:DescribeInstances``, ``ecs:ListServices``) to
``throttle`` or ``deny``; set it through ``POST /_emulator/api-faults`` (``{}`` clears it).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from xml.sax.saxutils import escape

from aiohttp import web

from sshgate.ssm.emulator.aws import JSON_TYPE

KINDS = ("throttle", "deny")
# (status, code, message) per protocol and kind, as the services send them.
_JSON = {
    "throttle": (400, "ThrottlingException", "Rate exceeded"),
    "deny": (400, "AccessDeniedException", "User: {owner} is not authorized to perform: {action}"),
}
_QUERY = {
    "throttle": (503, "RequestLimitExceeded", "Request limit exceeded."),
    "deny": (
        403,
        "UnauthorizedOperation",
        "You are not authorized to perform this operation. "
        "User: {owner} is not authorized to perform: {action}",
    ),
}


class ApiFaults:
    def __init__(self) -> None:
        self.failing: dict[str, str] = {}

    def configure(self, failing: Mapping[str, str]) -> None:
        for action, kind in failing.items():
            if kind not in KINDS or ":" not in action:
                raise ValueError(f"{action}: {kind!r}; use 'service:Action': 'throttle' | 'deny'")
        self.failing = dict(failing)

    def response(self, action: str, json_protocol: bool, owner: str) -> web.Response | None:
        """The error for ``action`` if it is set to fail, else None (serve it normally)."""
        kind = self.failing.get(action)
        if kind is None:
            return None
        status, code, template = (_JSON if json_protocol else _QUERY)[kind]
        message = template.format(owner=owner, action=action)
        if json_protocol:
            return web.json_response(
                {"__type": code, "message": message}, status=status, content_type=JSON_TYPE
            )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>{code}</Code><Message>{escape(message)}</Message></Error></Errors>"
            f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
        )
        return web.Response(status=status, text=body, content_type="text/xml")
