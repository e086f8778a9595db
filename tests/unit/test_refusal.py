"""Every error whose text a client may read is a Refusal: one line for the client, the reason
for the audit log, the exit status a session channel ends with."""

from __future__ import annotations

import pytest

from sshgate.aws.errors import AwsError
from sshgate.command import CommandError, parse_command
from sshgate.config import NativeUser
from sshgate.identity import Identity
from sshgate.login import LoginError, parse_login
from sshgate.native_users import NoNativeUser, resolve_native_user
from sshgate.oidc import errors
from sshgate.refusal import Refusal
from sshgate.upstream.base import UpstreamError


def test_upstream_and_aws_errors_keep_the_address_out_of_the_client_line() -> None:
    for exc in (
        UpstreamError("cannot reach web-1", "connect to 10.0.0.5:22: connection refused"),
        AwsError("cannot reach web-1", "connect to 10.0.0.5:22: connection refused", "X"),
    ):
        assert isinstance(exc, Refusal)
        assert str(exc) == "cannot reach web-1" and "10.0.0.5" in exc.reason
        assert exc.detail == exc.reason and exc.event == "upstream.error" and exc.exit_status == 1
    assert UpstreamError("web-1 is gone").reason == "web-1 is gone"


def test_a_formal_command_that_does_not_parse_is_a_usage_error() -> None:
    with pytest.raises(CommandError) as exc:
        parse_command("formal ssh --nope web-1")
    assert isinstance(exc.value, Refusal) and isinstance(exc.value, ValueError)
    assert exc.value.exit_status == 2 and exc.value.event == "command.invalid"


def test_logins_sign_ins_and_native_users() -> None:
    with pytest.raises(LoginError) as login:
        parse_login("idp:human:")
    assert isinstance(login.value, Refusal) and isinstance(login.value, ValueError)
    denied = errors.denied()
    assert isinstance(denied, Refusal)
    assert (str(denied), denied.reason, denied.event) == (
        "sign-in denied",
        "access_denied at the provider",
        "oidc.sign_in",
    )
    alice = Identity("human", "alice@corp.com", "formal", None)
    with pytest.raises(NoNativeUser) as none:
        resolve_native_user(
            "web-1", [NativeUser(username="root", secret="x", users=["bob@corp.com"])], alice, None, False
        )
    assert isinstance(none.value, Refusal) and none.value.event == "native_user.none"
