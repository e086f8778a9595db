"""A connection's sign-ins: at most one device flow each, plus step-ups.

A connection that authenticated with an unbound key, or whose session policy asks for ``mfa``,
reads its sign-in lines on the first session channel's stderr (docs/oidc.md; the lines wait in
:class:`~sshgate.gateway.notices.Notices`). :class:`SignIns` runs the flows and audits each one
without ever logging a token or the user code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sshgate.gateway.sso import Sso
from sshgate.oidc import errors
from sshgate.oidc.device import DeviceAuthorization
from sshgate.oidc.errors import SignInError
from sshgate.oidc.signin import SignedIn, SignIn


class SignIns:
    """One sign-in device flow per connection, plus one step-up per session that asks for it."""

    def __init__(self, sso: Sso, log: Any) -> None:
        self.sso = sso
        self.log = log
        self._signed_in = False

    async def begin(self, email: str, step_up: bool = False) -> tuple[SignIn, DeviceAuthorization]:
        if not step_up:
            if self._signed_in:
                raise errors.refused("one sign-in per connection; reconnect to try again")
            self._signed_in = True
        flow = self.sso.sign_in(email, step_up)
        try:
            authorization = await flow.begin()
        except SignInError as exc:
            self._audit(email, step_up, exc, 0.0)
            raise
        self.log.info(
            "oidc.sign_in",
            result="started",
            email=email,
            step_up=step_up,
            expires_in=authorization.expires_in,
        )
        return flow, authorization

    async def run(self, email: str, say: Callable[[str], None], step_up: bool = False) -> SignedIn:
        """A whole flow whose URL and code go to ``say`` (a session channel's stderr)."""
        flow, authorization = await self.begin(email, step_up)
        for line in authorization.instruction():
            say(line)
        return await self.finish(flow, authorization)

    async def finish(self, flow: SignIn, authorization: DeviceAuthorization) -> SignedIn:
        started = time.monotonic()
        try:
            person = await flow.finish(authorization)
        except SignInError as exc:
            self._audit(flow.expected_email, flow.step_up, exc, time.monotonic() - started)
            raise
        self.log.info(
            "oidc.sign_in",
            result="ok",
            email=person.email,
            groups=list(person.groups),
            step_up=flow.step_up,
            auth_time=person.auth_time,
            seconds=round(time.monotonic() - started, 3),
        )
        return person

    def _audit(self, email: str, step_up: bool, exc: SignInError, seconds: float) -> None:
        self.log.warning(
            "oidc.sign_in",
            result=exc.outcome,
            email=email,
            step_up=step_up,
            reason=exc.reason,
            seconds=round(seconds, 3),
        )
