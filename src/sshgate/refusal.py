"""The root of every refusal: one line for the client, the full reason for the audit log.

Errors whose text a client may read derive from :class:`Refusal` (an upstream, AWS, a sign-in,
a login or ``formal`` command that does not parse, a certificate, no native user), so whoever
ends a request tells the client ``str(exc)`` and logs ``exc.reason``, whatever went wrong.
"""

from __future__ import annotations


class Refusal(Exception):
    """Something the client asked for is refused; the root of client-safe errors.

    ``str(self)`` is the line the client reads; ``reason`` (audit only) may say more, but
    neither ever carries a secret.
    """

    def __init__(
        self, message: str, *, reason: str | None = None, exit_status: int = 1, event: str = ""
    ) -> None:
        super().__init__(message)
        self.reason = reason or message
        self.exit_status = exit_status
        self.event = event
