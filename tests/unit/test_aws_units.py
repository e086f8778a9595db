"""Pure pieces of the AWS side: error wording, throttling retries, session names, exit markers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from hypothesis import given
from hypothesis import strategies as st

from sshgate.aws.clients import call
from sshgate.aws.credentials import session_name
from sshgate.aws.errors import THROTTLE_CODES, AwsError, explain, is_throttle
from sshgate.aws.targets import select_instance
from sshgate.upstream.ssm_relay import ExitMarker


def _client_error(code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "StartSession")


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (
            "AccessDeniedException",
            "User: arn:aws:sts::1:assumed-role/gw is not authorized to perform: ssm:StartSession on resource",
            "access denied by IAM while starting (missing permission ssm:StartSession)",
        ),
        ("TargetNotConnected", "i-1 is not connected.", "the target's SSM agent is not connected (starting)"),
        (
            "ThrottlingException",
            "Rate exceeded",
            "AWS is throttling requests while starting; try again shortly",
        ),
        (
            "InvalidParameterException",
            "The execute command failed because execute command was not enabled",
            "ECS exec is not enabled",
        ),
    ],
)
def test_explain(code: str, message: str, expected: str) -> None:
    error = explain(_client_error(code, message), "starting")
    assert str(error).startswith(expected)
    assert error.detail == f"{code}: {message}"


def test_unreachable_endpoint_is_one_line() -> None:
    error = explain(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "looking up")
    assert str(error) == "cannot reach AWS while looking up"


async def test_call_retries_throttling_then_succeeds() -> None:
    attempts: list[int] = []

    def flaky(**kwargs: Any) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise _client_error("ThrottlingException", "Rate exceeded")
        return f"ok {kwargs['Target']}"

    assert await call("starting", flaky, Target="i-1") == "ok i-1"
    assert len(attempts) == 3


@pytest.mark.parametrize("code", sorted(THROTTLE_CODES))
def test_throttling_is_told_by_the_error_code(code: str) -> None:
    assert is_throttle(explain(_client_error(code, "Rate exceeded"), "starting"))


def test_a_message_that_says_throttling_is_not_a_throttle() -> None:
    # A cluster named "throttling" is not a reason to retry; its error text carries the name.
    error = explain(_client_error("ClusterNotFoundException", "Cluster throttling not found"), "starting")
    assert "throttling" in str(error)
    assert not is_throttle(error)
    assert not is_throttle(AwsError("AWS is throttling requests while starting; try again shortly"))


async def test_call_does_not_retry_access_denied() -> None:
    attempts: list[int] = []

    def denied(**kwargs: Any) -> None:
        attempts.append(1)
        raise _client_error("AccessDenied", "no")

    with pytest.raises(AwsError, match="access denied by IAM"):
        await call("starting", denied)
    assert len(attempts) == 1


def test_session_name_is_valid_for_sts() -> None:
    name = session_name("john+ops@corp.com/evil name" + "x" * 80)
    assert len(name) <= 64
    assert all(c.isalnum() or c in "_+=,.@-" for c in name)
    assert session_name("alice@corp.com") == "sshgate-alice@corp.com"


@given(st.binary(max_size=300), st.integers(0, 255), st.lists(st.integers(1, 40), max_size=30))
def test_exit_marker_strips_marker_and_reads_status(body: bytes, status: int, cuts: list[int]) -> None:
    marker = ExitMarker()
    stream = body + marker.marker + f"{status}\r\n".encode()
    out = b""
    pos = 0
    for cut in [*cuts, len(stream)]:
        out += marker.feed(stream[pos : pos + cut])
        pos += cut
        if pos >= len(stream):
            break
    out += marker.flush()
    assert out == body
    assert marker.status == status


def test_exit_marker_without_marker_passes_everything() -> None:
    marker = ExitMarker()
    text = b"output that ends with __sshgate_exit_ but not the real marker"
    assert marker.feed(text) + marker.flush() == text
    assert marker.status is None
    assert "printf" in marker.wrap("cat /etc/hostname") and marker.marker.decode() in marker.wrap("x")


def _instance(instance_id: str, state: str, launched: int) -> tuple[str, dict[str, Any]]:
    return "111", {
        "InstanceId": instance_id,
        "State": {"Name": state},
        "LaunchTime": datetime.fromtimestamp(launched, UTC),
    }


@pytest.mark.parametrize("select", ["one", "newest", "any"])
def test_select_prefers_the_only_running_instance(select: Literal["one", "newest", "any"]) -> None:
    found = [_instance("i-1", "stopped", 9), _instance("i-2", "running", 1)]
    assert select_instance(found, select, "the instance named x")[1]["InstanceId"] == "i-2"


def test_select_among_several_running() -> None:
    found = [_instance("i-1", "running", 5), _instance("i-3", "running", 9), _instance("i-2", "running", 7)]
    with pytest.raises(AwsError, match=r"matches 3 running instances \(i-1, i-2, i-3\); name exactly one"):
        select_instance(found, "one", "the instance named x")
    assert select_instance(found, "newest", "x")[1]["InstanceId"] == "i-3"
    assert {select_instance(found, "any", "x")[1]["InstanceId"] for _ in range(50)} == {"i-1", "i-2", "i-3"}
    stopped = [_instance("i-1", "stopped", 1), _instance("i-2", "stopped", 2)]
    with pytest.raises(AwsError, match=r"matches 2 instances \(i-1, i-2\)"):
        select_instance(stopped, "one", "x")
