"""AWS errors in words a user understands; the raw error goes to the audit log only."""

from __future__ import annotations

import re
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sshgate.refusal import Refusal

_ACTION = re.compile(r"perform: ([\w-]+:\w+)")
# Error codes with which the AWS APIs the gateway calls say "slow down".
THROTTLE_CODES = frozenset(
    {"ThrottlingException", "Throttling", "RequestLimitExceeded", "TooManyRequestsException"}
)


class AwsError(Refusal):
    """An AWS call that failed; ``str()`` is safe to show the client, ``detail`` is for the audit log."""

    def __init__(self, message: str, detail: str = "", code: str = "") -> None:
        super().__init__(message, reason=detail, event="upstream.error")
        self.detail = self.reason
        self.code = code


def explain(exc: BaseException, doing: str) -> AwsError:
    """Map a botocore exception raised while ``doing`` something to one readable line."""
    if isinstance(exc, ClientError):
        error: dict[str, Any] = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", ""))
        detail = f"{code}: {message}"
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            action = _ACTION.search(message)
            missing = f" (missing permission {action.group(1)})" if action else ""
            return AwsError(f"access denied by IAM while {doing}{missing}", detail, code)
        if code in THROTTLE_CODES:
            return AwsError(f"AWS is throttling requests while {doing}; try again shortly", detail, code)
        if code == "TargetNotConnected":
            return AwsError(f"the target's SSM agent is not connected ({doing})", detail, code)
        if code in ("InvalidInstanceId", "InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"):
            return AwsError(f"instance not found or not managed by SSM ({doing})", detail, code)
        if (
            code in ("InvalidParameterException", "TargetNotConnectedException")
            and "execute command" in message
        ):
            return AwsError(f"ECS exec is not enabled on the task ({doing}): {message}", detail, code)
        if code in ("ClusterNotFoundException", "ServiceNotFoundException"):
            return AwsError(f"{message or code} ({doing})", detail, code)
        return AwsError(f"AWS refused while {doing}: {code}", detail, code)
    if isinstance(exc, BotoCoreError):
        return AwsError(f"cannot reach AWS while {doing}", str(exc), type(exc).__name__)
    return AwsError(f"AWS call failed while {doing}", repr(exc))


def is_throttle(exc: BaseException) -> bool:
    """Worth retrying after a pause: decided by the error code, never by the message's wording."""
    return isinstance(exc, AwsError) and exc.code in THROTTLE_CODES
