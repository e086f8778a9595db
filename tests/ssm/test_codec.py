"""The wire format, byte for byte, against vectors written by hand from docs/ssm-protocol.md §4 and §8.3."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sshgate.ssm.codec import (
    Acknowledge,
    ActionStatus,
    ChannelClosed,
    ClientMessage,
    CodecError,
    DigestMismatch,
    HandshakeComplete,
    HandshakeRequest,
    HandshakeResponse,
    MessageType,
    OpenDataChannel,
    PayloadType,
    PortFlag,
    ProcessedAction,
    SizeData,
    ack_message,
    decode,
    encode,
    encode_ack,
    exit_code_payload,
    flag_payload,
    format_uuid,
    parse_exit_code,
    parse_flag,
    version_ge,
    version_gt,
)
from sshgate.ssm.emulator.plugins import split_utf8
from sshgate.ssm.reliable import RttEstimator
from sshgate.ssm.smux import Cmd, Frame, FrameDecoder, SmuxError, encode_frame

MESSAGE_ID = uuid.UUID("01234567-89ab-cdef-0011-223344556677").bytes

# input_stream_data, schema 1, created 1700000000000 ms, seq 5, flags 0, the UUID above with its
# halves swapped, SHA-256("hello"), payload type 1, length 5, "hello".
GOLDEN_HELLO = bytes.fromhex(
    "00000074"
    + b"input_stream_data".hex()
    + "20" * 15
    + "00000001"
    + "0000018bcfe56800"
    + "0000000000000005"
    + "0000000000000000"
    + "0011223344556677"
    + "0123456789abcdef"
    + "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    + "00000001"
    + "00000005"
    + "68656c6c6f"
)


def hello() -> ClientMessage:
    return ClientMessage(
        MessageType.INPUT_STREAM_DATA, 5, PayloadType.OUTPUT, b"hello", 0, MESSAGE_ID, 1_700_000_000_000
    )


def test_golden_encode() -> None:
    assert encode(hello()) == GOLDEN_HELLO
    assert len(GOLDEN_HELLO) == 125


def test_golden_decode() -> None:
    msg = decode(GOLDEN_HELLO)
    assert msg.message_type == "input_stream_data"
    assert msg.sequence_number == 5
    assert msg.created_date == 1_700_000_000_000
    assert uuid.UUID(bytes=msg.message_id) == uuid.UUID("01234567-89ab-cdef-0011-223344556677")
    assert msg.payload == b"hello"
    assert msg.payload_digest == hashlib.sha256(b"hello").digest()


def test_empty_payload_still_carries_digest_of_nothing() -> None:
    raw = encode(ClientMessage(MessageType.ACKNOWLEDGE, 0, 0, b"", 3, MESSAGE_ID, 1))
    assert raw[80:112] == hashlib.sha256(b"").digest()
    assert raw[116:120] == b"\x00\x00\x00\x00" and len(raw) == 120


def test_corrupted_digest_is_rejected() -> None:
    bad = bytearray(GOLDEN_HELLO)
    bad[-1] ^= 0x01
    with pytest.raises(DigestMismatch):
        decode(bytes(bad))
    assert decode(bytes(bad), verify_digest=False).payload == b"helln"


def test_validation_rules() -> None:
    with pytest.raises(CodecError):
        decode(GOLDEN_HELLO[:100])
    no_date = bytearray(GOLDEN_HELLO)
    no_date[40:48] = bytes(8)
    with pytest.raises(CodecError, match="created date"):
        decode(bytes(no_date))
    blank_type = bytearray(GOLDEN_HELLO)
    blank_type[4:36] = b" " * 32
    with pytest.raises(CodecError, match="type is empty"):
        decode(bytes(blank_type))


def test_publication_messages_skip_validation() -> None:
    """The live service sends start_publication with a bogus digest and length (§4)."""
    raw = bytearray(
        encode(ClientMessage(MessageType.START_PUBLICATION, 0, 0, b"x", 3, MESSAGE_ID, 0, 1, b"\xff" * 32))
    )
    raw[116:120] = (1).to_bytes(4, "little")
    assert decode(bytes(raw)).message_type == "start_publication"


def test_reader_trusts_header_length_not_payload_length() -> None:
    raw = bytearray(GOLDEN_HELLO)
    raw[116:120] = (999).to_bytes(4, "big")
    assert decode(bytes(raw), verify_digest=False).payload == b"hello"


def test_type_padding_with_nuls_is_stripped() -> None:
    raw = bytearray(GOLDEN_HELLO)
    raw[21:36] = b"\x00" * 15
    assert decode(bytes(raw)).message_type == "input_stream_data"


messages = st.builds(
    ClientMessage,
    message_type=st.sampled_from([m.value for m in MessageType]),
    sequence_number=st.integers(-(2**63), 2**63 - 1),
    payload_type=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=4096),
    flags=st.integers(0, 2**64 - 1),
    message_id=st.binary(min_size=16, max_size=16),
    created_date=st.integers(1, 2**64 - 1),
    schema_version=st.integers(0, 2**32 - 1),
)


@given(messages)
def test_any_message_round_trips(msg: ClientMessage) -> None:
    decoded = decode(encode(msg))
    assert decoded.payload_digest == hashlib.sha256(msg.payload).digest()
    decoded.payload_digest = b""
    assert decoded == msg


@given(messages, st.data())
def test_any_flipped_payload_bit_is_rejected(msg: ClientMessage, data: st.DataObject) -> None:
    if not msg.payload or msg.message_type in ("start_publication", "pause_publication"):
        return
    raw = bytearray(encode(msg))
    index = data.draw(st.integers(120, len(raw) - 1))
    raw[index] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(DigestMismatch):
        decode(bytes(raw))


def test_acknowledge_json_matches_the_plugin_byte_for_byte() -> None:
    acked = hello()
    ack = ack_message(acked)
    assert ack.message_type == "acknowledge" and ack.sequence_number == 0 and ack.flags == 3
    assert ack.payload_type == 0
    assert ack.payload == (
        b'{"AcknowledgedMessageType":"input_stream_data",'
        b'"AcknowledgedMessageId":"01234567-89ab-cdef-0011-223344556677",'
        b'"AcknowledgedMessageSequenceNumber":5,"IsSequentialMessage":true}'
    )
    assert Acknowledge.from_json(ack.payload) == Acknowledge(
        "input_stream_data", "01234567-89ab-cdef-0011-223344556677", 5
    )
    with pytest.raises(CodecError):
        Acknowledge.from_json(b'{"AcknowledgedMessageType":"x"}')


def test_handshake_payloads() -> None:
    request = HandshakeRequest.for_session("3.3.0.0", "Port", {"portNumber": "22"})
    assert json.loads(request.to_json()) == {
        "AgentVersion": "3.3.0.0",
        "RequestedClientActions": [
            {
                "ActionType": "SessionType",
                "ActionParameters": {"SessionType": "Port", "Properties": {"portNumber": "22"}},
            }
        ],
    }
    assert HandshakeRequest.from_json(request.to_json()) == request
    response = HandshakeResponse("1.2.0.0", (ProcessedAction("SessionType", ActionStatus.SUCCESS),))
    assert response.to_json() == (
        b'{"ClientVersion":"1.2.0.0","ProcessedClientActions":[{"ActionType":"SessionType",'
        b'"ActionStatus":1,"ActionResult":null,"Error":""}],"Errors":null}'
    )
    assert HandshakeResponse.from_json(response.to_json()) == response
    complete = HandshakeComplete(1500, "hi")
    assert complete.to_json() == b'{"HandshakeTimeToComplete":1500,"CustomerMessage":"hi"}'
    assert HandshakeComplete.from_json(complete.to_json()) == complete


def test_small_payloads() -> None:
    assert SizeData(80, 24).to_json() == b'{"cols":80,"rows":24}'
    assert SizeData.from_json(b'{"cols":80,"rows":24}') == SizeData(80, 24)
    with pytest.raises(CodecError):
        SizeData.from_json(b'{"cols":-1,"rows":24}')
    assert flag_payload(PortFlag.TERMINATE_SESSION) == b"\x00\x00\x00\x02"
    assert parse_flag(b"\x00\x00\x00\x03") == PortFlag.CONNECT_TO_PORT_ERROR
    with pytest.raises(CodecError):
        parse_flag(b"\x03")
    assert exit_code_payload(3) == b"EXIT_CODE: 3"
    assert parse_exit_code(b"EXIT_CODE: -1") == -1
    with pytest.raises(CodecError):
        parse_exit_code(b"exit 3")
    closed = ChannelClosed("m", "2026-01-01T00:00:00.000Z", "client", "sess", "bye")
    assert list(json.loads(closed.to_json())) == [
        "MessageId",
        "CreatedDate",
        "DestinationId",
        "SessionId",
        "MessageType",
        "SchemaVersion",
        "Output",
    ]
    assert ChannelClosed.from_json(closed.to_json()) == closed
    opening = OpenDataChannel("tok", "cid", "1.2.650.0", "rid")
    assert opening.to_json() == (
        '{"MessageSchemaVersion":"1.0","RequestId":"rid","TokenValue":"tok","ClientId":"cid",'
        '"ClientVersion":"1.2.650.0"}'
    )
    assert OpenDataChannel.from_json(opening.to_json()) == opening
    legacy = OpenDataChannel.from_json(
        '{"MessageSchemaVersion":"1.0","RequestId":"r","TokenValue":"t","ClientId":"c"}'
    )
    assert legacy.client_version == ""
    numeric = OpenDataChannel.from_json(
        '{"MessageSchemaVersion":1,"RequestId":"r","TokenValue":"t","ClientId":"c"}'
    )
    assert numeric.schema_version == "1"
    with pytest.raises(CodecError, match="ClientId"):
        OpenDataChannel.from_json('{"MessageSchemaVersion":"1.0","RequestId":"r","TokenValue":"t"}')


def test_uuid_text_form() -> None:
    assert format_uuid(MESSAGE_ID) == "01234567-89ab-cdef-0011-223344556677"


def test_version_rules() -> None:
    assert version_gt("3.0.197.0", "3.0.196.0")
    assert not version_gt("3.0.196.0", "3.0.196.0")
    assert not version_gt("3.1", "3.0.196.0")  # the plugin requires equal component counts
    assert version_gt("1.2.332.0", "1.2.331.0")
    assert version_ge("1.2.650.0", "1.1.70") and not version_ge("1.1.69.9", "1.1.70")


def test_rto_follows_the_documented_formula() -> None:
    rtt = RttEstimator()
    assert rtt.rto == 0.2
    rtt.sample(0.1)
    assert rtt.rto == pytest.approx(0.11)
    rtt.sample(10.0)
    assert rtt.rto == 1.0


def test_utf8_split_like_the_agents_process_stdout_data() -> None:
    snowman = "☃".encode()
    assert split_utf8(b"ab" + snowman[:2]) == (b"ab", snowman[:2])
    assert split_utf8(b"ab" + snowman) == (b"ab" + snowman, b"")
    assert split_utf8(b"\xff\xfeabcd") == (b"\xff\xfeabcd", b"")  # invalid bytes pass alone...
    assert split_utf8(b"abcd\xff\xfe") == (b"abcd", b"\xff\xfe")  # ...but not in the last 3 bytes
    assert split_utf8(b"a\xef\xbf\xbdbcde") == (b"a\xefbcde", b"")  # Go's RuneError: U+FFFD loses 2 bytes


# smux v1: ver 1 | cmd | length (LE16) | stream id (LE32)
def test_smux_golden_frames() -> None:
    assert encode_frame(Cmd.SYN, 3) == bytes.fromhex("0100000003000000")
    assert encode_frame(Cmd.PSH, 3, b"hi") == bytes.fromhex("01020200030000006869")
    assert encode_frame(Cmd.FIN, 0x01020305) == bytes.fromhex("0101000005030201")


@given(
    st.lists(st.tuples(st.sampled_from(list(Cmd)), st.integers(0, 2**32 - 1), st.binary(max_size=300))),
    st.lists(st.integers(1, 50)),
)
def test_smux_frames_survive_any_split(frames: list[tuple[Cmd, int, bytes]], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(c, s, d) for c, s, d in frames)
    decoder = FrameDecoder()
    out: list[Frame] = []
    pos = 0
    for cut in cuts:
        out += decoder.feed(stream[pos : pos + cut])
        pos += cut
    out += decoder.feed(stream[pos:])
    assert out == [Frame(c, s, d) for c, s, d in frames]


def test_smux_rejects_other_versions_and_v2_commands() -> None:
    with pytest.raises(SmuxError):
        FrameDecoder().feed(bytes.fromhex("0200000003000000"))
    with pytest.raises(SmuxError):
        FrameDecoder().feed(bytes.fromhex("0104000003000000"))


@given(
    st.sampled_from(["input_stream_data", "output_stream_data"]),
    st.uuids(),
    st.integers(0, 2**63 - 1),
    st.booleans(),
)
def test_ack_fast_path_agrees_with_json(kind: str, mid: uuid.UUID, seq: int, sequential: bool) -> None:
    ack = Acknowledge(kind, str(mid), seq, sequential)
    assert Acknowledge.from_json(ack.to_json()) == ack
    reordered = json.dumps(dict(reversed(list(json.loads(ack.to_json()).items())))).encode()
    assert Acknowledge.from_json(reordered) == ack


def test_encode_ack_is_the_ack_message_encoded() -> None:
    acked = ClientMessage("output_stream_data", 42, 1, b"data", message_id=MESSAGE_ID)
    fast, slow = decode(encode_ack(acked)), ack_message(acked)
    fields = ("message_type", "sequence_number", "flags", "payload_type", "payload", "schema_version")
    assert [getattr(fast, f) for f in fields] == [getattr(slow, f) for f in fields]
    assert fast.message_id != slow.message_id  # each ack has its own id
