"""How a sign-in ends badly: one line the client may read, and a reason only the audit log gets.

No token (device code, access, ID or refresh token) is ever part of either text.
"""

from __future__ import annotations

from typing import Literal

from sshgate.refusal import Refusal

Outcome = Literal["denied", "expired", "unavailable", "refused", "invalid"]


class SignInError(Refusal):
    """A sign-in that did not produce an identity. ``str()`` is the client's line."""

    def __init__(self, outcome: Outcome, client_line: str, reason: str = "") -> None:
        super().__init__(client_line, reason=reason, event="oidc.sign_in")
        self.outcome = outcome


def denied(reason: str = "") -> SignInError:
    return SignInError("denied", "sign-in denied", reason or "access_denied at the provider")


def expired(reason: str = "") -> SignInError:
    return SignInError("expired", "sign-in code expired", reason or "expired_token at the provider")


def unavailable(reason: str) -> SignInError:
    return SignInError("unavailable", "sign-in unavailable", reason)


def invalid(reason: str) -> SignInError:
    """The provider's answer does not hold up (signature, issuer, audience, times, shape)."""
    return SignInError("invalid", "sign-in failed: the provider's answer could not be verified", reason)


def refused(client_line: str, reason: str = "") -> SignInError:
    """A valid sign-in of someone this login may not become (email, domain, verification)."""
    return SignInError("refused", f"sign-in refused: {client_line}", reason or client_line)
