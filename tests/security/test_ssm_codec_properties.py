"""Property tests: whatever a hostile peer puts in a frame or a JSON payload, the codec raises
``CodecError`` (its documented error) or returns a value; nothing else escapes (issue 11, item 9).

The JSON strategies keep each model's field names but give them any JSON value (huge integers,
infinities, NaN, nested lists and objects, wrong types), besides raw bytes, broken JSON and
nesting far deeper than the interpreter's recursion limit."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sshgate.ssm.codec import (
    MAX_JSON_DEPTH,
    Acknowledge,
    ChannelClosed,
    ClientMessage,
    CodecError,
    HandshakeComplete,
    HandshakeRequest,
    HandshakeResponse,
    OpenDataChannel,
    PayloadType,
    SizeData,
    decode,
    encode,
    parse_exit_code,
    parse_flag,
)

Parser = Callable[[bytes], Any]

FIELDS: dict[str, tuple[Parser, list[str]]] = {
    "acknowledge": (
        Acknowledge.from_json,
        [
            "AcknowledgedMessageType",
            "AcknowledgedMessageId",
            "AcknowledgedMessageSequenceNumber",
            "IsSequentialMessage",
        ],
    ),
    "handshake_request": (HandshakeRequest.from_json, ["AgentVersion", "RequestedClientActions"]),
    "handshake_response": (
        HandshakeResponse.from_json,
        ["ClientVersion", "ProcessedClientActions", "Errors"],
    ),
    "handshake_complete": (HandshakeComplete.from_json, ["HandshakeTimeToComplete", "CustomerMessage"]),
    "size": (SizeData.from_json, ["cols", "rows"]),
    "channel_closed": (
        ChannelClosed.from_json,
        ["MessageId", "CreatedDate", "DestinationId", "SessionId", "MessageType", "SchemaVersion", "Output"],
    ),
    "open_data_channel": (
        OpenDataChannel.from_json,
        ["MessageSchemaVersion", "RequestId", "TokenValue", "ClientId", "ClientVersion"],
    ),
}
ACTION_FIELDS = ["ActionType", "ActionParameters", "ActionStatus", "ActionResult", "Error"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([2**63, -(2**63) - 1, 2**32, -1, 10**300])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# Objects shaped like the real ones: the right keys (and action objects), any values.
actions = st.lists(st.dictionaries(st.sampled_from(ACTION_FIELDS), json_values, max_size=5), max_size=3)


def _payloads(keys: list[str]) -> st.SearchStrategy[bytes]:
    shaped = st.dictionaries(st.sampled_from(keys), json_values | actions, max_size=len(keys))
    documents = (shaped | json_values).map(lambda doc: json.dumps(doc).encode())  # NaN, Infinity allowed
    deep = st.integers(MAX_JSON_DEPTH, 50_000).flatmap(
        lambda n: st.sampled_from(
            [
                b'{"' + keys[0].encode() + b'":' + b"[" * n + b"]" * n + b"}",
                b"[" * n + b"]" * n,
                b'{"a":' * n + b"1" + b"}" * n,
                b"[" * n,
            ]
        )
    )
    huge = st.sampled_from([b'{"' + k.encode() + b'":' + b"9" * 5000 + b"}" for k in keys])
    return documents | deep | huge | st.binary(max_size=64)


def _only_codec_error(parse: Parser, payload: bytes) -> None:
    try:
        parse(payload)
    except CodecError:
        pass
    except Exception as exc:  # the property: this must never happen
        raise AssertionError(f"{type(exc).__name__} escaped for {payload[:80]!r}") from exc


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(FIELDS)), st.data())
def test_json_payloads_raise_only_codec_error(model: str, data: st.DataObject) -> None:
    parse, keys = FIELDS[model]
    _only_codec_error(parse, data.draw(_payloads(keys)))


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=40)
    | st.sampled_from([b"EXIT_CODE: " + b"9" * 5000, b"EXIT_CODE: 99999999999", b"EXIT_CODE: -2147483649"])
    | st.integers(-(2**70), 2**70).map(lambda n: f"EXIT_CODE: {n}".encode())
)
def test_exit_code_and_flag_payloads_raise_only_codec_error(payload: bytes) -> None:
    _only_codec_error(parse_exit_code, payload)
    _only_codec_error(parse_flag, payload)


def test_exit_code_is_an_int32() -> None:
    assert parse_exit_code(b"EXIT_CODE: -1") == -1
    assert parse_exit_code(b"EXIT_CODE: 2147483647") == 2**31 - 1
    for bad in (b"EXIT_CODE: 2147483648", b"EXIT_CODE: " + b"9" * 5000):
        try:
            parse_exit_code(bad)
        except CodecError:
            continue
        raise AssertionError(f"{bad[:30]!r} was accepted")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_frame_bytes_raise_only_codec_error(raw: bytes) -> None:
    _only_codec_error(decode, raw)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(FIELDS)), st.integers(0, 2**32 - 1), st.data())
def test_hostile_payload_in_a_valid_frame_raises_only_codec_error(
    model: str, payload_type: int, data: st.DataObject
) -> None:
    """The way a receiver meets them: a well-formed frame around a hostile payload."""
    parse, keys = FIELDS[model]
    payload = data.draw(_payloads(keys))
    message = decode(encode(ClientMessage("output_stream_data", 1, payload_type, payload)))
    assert message.payload == payload
    _only_codec_error(parse, message.payload)
    if payload_type == PayloadType.EXIT_CODE:
        _only_codec_error(parse_exit_code, message.payload)


def test_deep_nesting_is_refused_before_anything_recurses() -> None:
    nested = b'{"Output":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for parse in (ChannelClosed.from_json, HandshakeRequest.from_json):
        try:
            parse(nested)
        except CodecError as exc:
            assert "JSON" in str(exc)
            continue
        raise AssertionError("deep JSON was accepted")
    shallow = {
        "AgentVersion": "3.3.0.0",
        "RequestedClientActions": [
            {
                "ActionType": "SessionType",
                "ActionParameters": {"SessionType": "Port", "Properties": {"portNumber": "22"}},
            }
        ],
    }
    assert HandshakeRequest.from_json(json.dumps(shallow).encode()).agent_version == "3.3.0.0"
