"""The device authorization grant of RFC 8628 as a state machine, free of I/O and of the clock.

The caller asks :meth:`DevicePoll.wait` how long to sleep, posts to the token endpoint, and
feeds the answer to :meth:`DevicePoll.answer`, until it returns tokens or raises a
:class:`~sshgate.oidc.errors.SignInError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sshgate.config import issuer_allowed
from sshgate.oidc import errors

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SLOW_DOWN_S = 5  # RFC 8628 §3.5
_USER_CODE = re.compile(r"[A-Za-z0-9-]{1,32}")
_MAX_INTERVAL_S = 60


@dataclass(frozen=True, slots=True)
class DeviceAuthorization:
    """What the person is shown, and the (secret) code the gateway polls with."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float

    def instruction(self) -> list[str]:
        """The lines the client reads: ``Open URL and enter CODE`` and the complete URL."""
        lines = [f"Open {self.verification_uri} and enter {self.user_code}"]
        if self.verification_uri_complete:
            lines.append(f"or open {self.verification_uri_complete}")
        return lines


def _printable_url(value: Any, name: str) -> str:
    # Shown in the client's terminal: no control characters, and only a web address.
    if not isinstance(value, str) or len(value) > 512 or not value.isprintable() or " " in value:
        raise errors.invalid(f"device authorization {name} is not a URL")
    if not issuer_allowed(value.split("?", 1)[0]):
        raise errors.invalid(f"device authorization {name} is not an https:// URL")
    return value


def parse_device_authorization(doc: Any) -> DeviceAuthorization:
    """Read the device authorization response (Google says ``verification_url``)."""
    if not isinstance(doc, Mapping):
        raise errors.invalid("device authorization answer is not a JSON object")
    if "error" in doc:
        raise errors.unavailable(f"device authorization refused: {_error_text(doc)}")
    device_code, user_code = doc.get("device_code"), doc.get("user_code")
    if not isinstance(device_code, str) or not device_code or len(device_code) > 2048:
        raise errors.invalid("device authorization answer has no device_code")
    if not isinstance(user_code, str) or _USER_CODE.fullmatch(user_code) is None:
        raise errors.invalid("device authorization user_code is missing or not printable")
    uri = _printable_url(doc.get("verification_uri", doc.get("verification_url")), "verification_uri")
    complete = doc.get("verification_uri_complete")
    expires_in, interval = doc.get("expires_in"), doc.get("interval", 5)
    for name, value in (("expires_in", expires_in), ("interval", interval)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise errors.invalid(f"device authorization {name} is not a number")
    return DeviceAuthorization(
        device_code,
        user_code,
        uri,
        _printable_url(complete, "verification_uri_complete") if complete is not None else None,
        float(expires_in),  # type: ignore[arg-type]
        min(max(float(interval), 1.0), _MAX_INTERVAL_S),
    )


def _error_text(doc: Mapping[str, Any]) -> str:
    """The OAuth error code and description, shortened; they come from the provider, not a token."""
    error = str(doc.get("error", ""))[:64]
    description = str(doc.get("error_description", ""))[:200]
    return f"{error}: {description}" if description else error


@dataclass(frozen=True, slots=True)
class Tokens:
    id_token: str = field(repr=False)
    access_token: str | None = field(repr=False)


def parse_tokens(status: int, doc: Any) -> Tokens:
    """A token endpoint's success answer (RFC 6749 §5.1); anything else ends the sign-in."""
    if not isinstance(doc, Mapping) or status != 200 or "error" in doc:
        error = _error_text(doc) if isinstance(doc, Mapping) else "no JSON object"
        raise errors.unavailable(f"token endpoint error: {error} (HTTP {status})")
    id_token, access = doc.get("id_token"), doc.get("access_token")
    if not isinstance(id_token, str):
        raise errors.invalid("token endpoint answer has no id_token (is 'openid' in the scopes?)")
    return Tokens(id_token, access if isinstance(access, str) else None)


class DevicePoll:
    """RFC 8628 §3.4-3.5: poll every ``interval`` s, slower on ``slow_down``, until a verdict.

    ``deadline`` is the earlier of the code's expiry and the gateway's own sign-in timeout,
    both in the caller's clock.
    """

    def __init__(self, authorization: DeviceAuthorization, started: float, timeout_s: float) -> None:
        self.interval = authorization.interval
        self.deadline = started + min(authorization.expires_in, timeout_s)
        self._next = started + self.interval

    def wait(self, now: float) -> float:
        """Seconds to sleep before the next poll; past the deadline the code has expired."""
        if now >= self.deadline:
            raise errors.expired("the sign-in timed out before the person approved it")
        return max(0.0, min(self._next, self.deadline) - now)

    def answer(self, status: int, doc: Any, now: float) -> Tokens | None:
        """Tokens when approved, ``None`` to keep polling, else the sign-in's end."""
        self._next = now + self.interval
        if not isinstance(doc, Mapping):
            raise errors.invalid(f"token endpoint answered HTTP {status} without a JSON object")
        if status == 200 and "error" not in doc:
            return parse_tokens(status, doc)
        error = doc.get("error")
        if error == "authorization_pending":
            return None
        if error == "slow_down":
            self.interval = min(self.interval + SLOW_DOWN_S, _MAX_INTERVAL_S)
            self._next = now + self.interval
            return None
        if error == "access_denied":
            raise errors.denied()
        if error == "expired_token":
            raise errors.expired()
        raise errors.unavailable(f"token endpoint error: {_error_text(doc)} (HTTP {status})")
