"""Sans-IO codec for the Session Manager data-channel message ("ClientMessage" / "AgentMessage").

Pure functions and value types only, so the wire format can be tested byte for byte without a
socket. Layout (docs/ssm-protocol.md §4): a 120-byte big-endian header (HeaderLength always 116,
space-padded MessageType, swapped UUID halves, SHA-256 payload digest) followed by the payload,
which readers locate at ``HeaderLength + 4`` exactly as AWS's parser does.

Public API:
    ``ClientMessage`` -- one decoded or to-be-encoded message.
    ``encode(message) -> bytes`` / ``decode(data, verify_digest=True) -> ClientMessage``.
    ``MessageType``, ``PayloadType``, ``PortFlag``, ``HeaderFlag`` -- the protocol's enumerations.
    JSON payload models: ``Acknowledge``, ``HandshakeRequest`` / ``RequestedAction``,
    ``HandshakeResponse`` / ``ProcessedAction``, ``HandshakeComplete``, ``SizeData``,
    ``ChannelClosed``, ``OpenDataChannel``; helpers ``flag_payload`` / ``parse_flag`` and
    ``exit_code_payload`` / ``parse_exit_code``; ``version_gt`` for dotted version comparisons.

Everything that reads bytes from the peer (``decode``, every ``from_json``, ``parse_flag``,
``parse_exit_code``) raises ``CodecError`` and nothing else on malformed input, whatever it is:
the peer may be hostile. JSON fields are typed as the Go structs on both AWS sides type them (a
wrong type fails there too), integers are range-checked and JSON nested deeper than
``MAX_JSON_DEPTH`` is refused, so nothing built from a payload can overflow or recurse later.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import struct
import time
import uuid
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

HEADER = struct.Struct(">I32sIQqQ16s32sII")
HEADER_LENGTH = 116  # offset of PayloadLength: the value every sender writes into HeaderLength
MESSAGE_TYPE_WIDTH = 32
SCHEMA_VERSION = 1
EMPTY_DIGEST = hashlib.sha256(b"").digest()


class CodecError(ValueError):
    """A frame or payload that a receiver must drop."""


class DigestMismatch(CodecError):
    """The payload does not hash to the header's PayloadDigest."""


class MessageType(StrEnum):
    INPUT_STREAM_DATA = "input_stream_data"
    OUTPUT_STREAM_DATA = "output_stream_data"
    ACKNOWLEDGE = "acknowledge"
    CHANNEL_CLOSED = "channel_closed"
    START_PUBLICATION = "start_publication"
    PAUSE_PUBLICATION = "pause_publication"
    AGENT_SESSION_STATE = "agent_session_state"


_TYPE_NAMES = {m.value.encode().ljust(MESSAGE_TYPE_WIDTH, b" "): m.value for m in MessageType}
UNVALIDATED_TYPES = frozenset({MessageType.START_PUBLICATION, MessageType.PAUSE_PUBLICATION})


class PayloadType(IntEnum):
    OUTPUT = 1
    ERROR = 2
    SIZE = 3
    PARAMETER = 4
    HANDSHAKE_REQUEST = 5
    HANDSHAKE_RESPONSE = 6
    HANDSHAKE_COMPLETE = 7
    ENC_CHALLENGE_REQUEST = 8
    ENC_CHALLENGE_RESPONSE = 9
    FLAG = 10
    STDERR = 11
    EXIT_CODE = 12


class HeaderFlag(IntEnum):
    """Bits of the header's Flags field: SYN on a sender's first stream message, 3 on control."""

    SYN = 1
    FIN = 2
    CONTROL = 3


class PortFlag(IntEnum):
    """Values carried by a PayloadType FLAG message (§5.4)."""

    DISCONNECT_TO_PORT = 1
    TERMINATE_SESSION = 2
    CONNECT_TO_PORT_ERROR = 3


class ActionStatus(IntEnum):
    SUCCESS = 1
    FAILED = 2
    UNSUPPORTED = 3


def now_ms() -> int:
    return int(time.time() * 1000)


_VERSION_4 = (0x4000 << 64) | (0x8000 << 48)
_VERSION_MASK = ~((0xF000 << 64) | (0xC000 << 48))


def new_message_id() -> bytes:
    """A random (version 4) UUID as 16 bytes; cheaper than uuid.uuid4() on the hot path."""
    return ((random.getrandbits(128) & _VERSION_MASK) | _VERSION_4).to_bytes(16, "big")


def format_uuid(value: bytes) -> str:
    """The lower-case hyphenated text form used in JSON payloads."""
    h = value.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(slots=True)
class ClientMessage:
    """One data-channel message. ``message_id`` is the UUID's 16 bytes in normal (RFC) order; the
    codec swaps the halves on the wire. ``payload_digest`` is read from the wire on decode; when
    encoding, an empty value means "SHA-256 of the payload" and anything else is written verbatim
    (the service's bogus digests on publication messages). Not frozen: frozen dataclasses are
    several times slower to build, and this type is built twice per message."""

    message_type: str
    sequence_number: int
    payload_type: int
    payload: bytes
    flags: int = 0
    message_id: bytes = field(default_factory=new_message_id)
    created_date: int = field(default_factory=now_ms)
    schema_version: int = SCHEMA_VERSION
    payload_digest: bytes = b""


def encode(message: ClientMessage) -> bytes:
    """Serialize a message to its wire bytes (header length 116, payload at offset 120)."""
    payload = message.payload
    digest = message.payload_digest or hashlib.sha256(payload).digest()
    mid = message.message_id
    header = HEADER.pack(
        HEADER_LENGTH,
        message.message_type.encode("ascii").ljust(MESSAGE_TYPE_WIDTH, b" "),
        message.schema_version,
        message.created_date,
        message.sequence_number,
        message.flags,
        mid[8:] + mid[:8],
        digest,
        message.payload_type,
        len(payload),
    )
    return header + payload


def decode(data: bytes, *, verify_digest: bool = True) -> ClientMessage:
    """Parse wire bytes the way AWS's readers do and validate like the plugin's ``Validate``.

    The payload starts at HeaderLength + 4 (PayloadLength is ignored). Publication messages skip
    validation entirely; otherwise HeaderLength, MessageType and CreatedDate must be set and, when
    ``verify_digest`` and PayloadLength is non-zero, the digest must match.
    """
    if len(data) < HEADER.size:
        raise CodecError(f"message of {len(data)} bytes is shorter than the {HEADER.size}-byte header")
    (hl, raw_type, schema, created, seq, flags, wire_id, digest, ptype, plen) = HEADER.unpack_from(data)
    if hl + 4 > len(data):
        raise CodecError(f"header length {hl} points past the end of a {len(data)}-byte message")
    message_type = _TYPE_NAMES.get(raw_type)
    if message_type is None:
        message_type = raw_type.strip(b"\x00").strip().decode("ascii", "replace")
    payload = data[hl + 4 :]
    if message_type not in UNVALIDATED_TYPES:
        if hl == 0:
            raise CodecError("header length is 0")
        if not message_type:
            raise CodecError("message type is empty")
        if created == 0:
            raise CodecError("created date is 0")
        if verify_digest and plen != 0 and hashlib.sha256(payload).digest() != digest:
            raise DigestMismatch(f"payload digest mismatch on {message_type} seq {seq}")
    return ClientMessage(
        message_type, seq, ptype, payload, flags, wire_id[8:] + wire_id[:8], created, schema, digest
    )


def _json(value: Any) -> bytes:
    """Compact JSON like Go's encoding/json (key order as given)."""
    return json.dumps(value, separators=(",", ":")).encode()


MAX_HANDSHAKE_ACTIONS = 16
MAX_ACTION_TYPE = 64
MAX_JSON_DEPTH = 16  # real payloads nest 4 deep (handshake properties)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)


def _load_object(payload: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise CodecError(f"{what}: invalid JSON ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise CodecError(f"{what}: expected a JSON object")
    _check_depth(value, what)
    return value


def _check_depth(value: Any, what: str) -> None:
    """Refuse deep nesting without recursing (``str()`` or ``==`` of such a value would)."""
    level: list[Any] = [value]
    for _ in range(MAX_JSON_DEPTH):
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return
    raise CodecError(f"{what}: JSON nested deeper than {MAX_JSON_DEPTH}")


_MISSING: Any = object()


def _field(obj: dict[str, Any], key: str, kind: type, what: str, default: Any = _MISSING) -> Any:
    """``obj[key]`` of type ``kind``; an absent or null field is ``default`` when one is given."""
    value = obj.get(key)
    if value is None and default is not _MISSING:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CodecError(f"{what}: field {key} must be {kind.__name__}")
    return value


def _int(obj: dict[str, Any], key: str, what: str, bounds: tuple[int, int], default: Any = _MISSING) -> int:
    value: int = _field(obj, key, int, what, default)
    if not bounds[0] <= value <= bounds[1]:
        raise CodecError(f"{what}: field {key} is out of range")
    return value


def _objects(obj: dict[str, Any], key: str, what: str) -> list[dict[str, Any]]:
    """A list of JSON objects (absent or null: empty)."""
    items: list[Any] = _field(obj, key, list, what, [])
    if not all(isinstance(item, dict) for item in items):
        raise CodecError(f"{what}: {key} must be a list of objects")
    return items


_ACK_FORMAT = re.compile(
    rb'\{"AcknowledgedMessageType":"([a-z_]+)","AcknowledgedMessageId":"([0-9a-fA-F-]{36})",'
    rb'"AcknowledgedMessageSequenceNumber":(-?\d{1,19}),"IsSequentialMessage":(true|false)\}'
)


@dataclass(frozen=True, slots=True)
class Acknowledge:
    message_type: str
    message_id: str
    sequence_number: int
    is_sequential: bool = True

    def to_json(self) -> bytes:
        # An f-string keeps Go's key order and is the hot path of every transfer.
        return (
            f'{{"AcknowledgedMessageType":"{self.message_type}",'
            f'"AcknowledgedMessageId":"{self.message_id}",'
            f'"AcknowledgedMessageSequenceNumber":{self.sequence_number},'
            f'"IsSequentialMessage":{"true" if self.is_sequential else "false"}}}'
        ).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> Acknowledge:
        fast = _ACK_FORMAT.fullmatch(payload)
        if fast is not None:  # the exact form both AWS sides emit: skip the JSON parser
            kind, mid, seq, sequential = fast.groups()
            return cls(kind.decode(), mid.decode(), int(seq), sequential == b"true")
        what = "acknowledge"
        obj = _load_object(payload, what)
        return cls(
            _field(obj, "AcknowledgedMessageType", str, what),
            _field(obj, "AcknowledgedMessageId", str, what),
            _int(obj, "AcknowledgedMessageSequenceNumber", what, INT64),
            _field(obj, "IsSequentialMessage", bool, what, True),
        )


def ack_message(acked: ClientMessage) -> ClientMessage:
    """The acknowledge control message for a received stream message (seq 0, flags 3, type 0)."""
    ack = Acknowledge(acked.message_type, format_uuid(acked.message_id), acked.sequence_number)
    return ClientMessage(MessageType.ACKNOWLEDGE, 0, 0, ack.to_json(), flags=HeaderFlag.CONTROL)


_ACK_TYPE = MessageType.ACKNOWLEDGE.value.encode().ljust(MESSAGE_TYPE_WIDTH, b" ")


def encode_ack(acked: ClientMessage) -> bytes:
    """``encode(ack_message(acked))`` in one step: every received stream message costs one."""
    h = acked.message_id.hex()
    payload = (
        f'{{"AcknowledgedMessageType":"{acked.message_type}",'
        f'"AcknowledgedMessageId":"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",'
        f'"AcknowledgedMessageSequenceNumber":{acked.sequence_number},"IsSequentialMessage":true}}'
    ).encode()
    mid = new_message_id()
    return (
        HEADER.pack(
            HEADER_LENGTH,
            _ACK_TYPE,
            SCHEMA_VERSION,
            int(time.time() * 1000),
            0,
            HeaderFlag.CONTROL,
            mid[8:] + mid[:8],
            hashlib.sha256(payload).digest(),
            0,
            len(payload),
        )
        + payload
    )


@dataclass(frozen=True, slots=True)
class RequestedAction:
    action_type: str
    parameters: Any

    def to_obj(self) -> dict[str, Any]:
        return {"ActionType": self.action_type, "ActionParameters": self.parameters}


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    agent_version: str
    actions: tuple[RequestedAction, ...]

    @classmethod
    def for_session(
        cls, agent_version: str, session_type: str, properties: Any, kms_key_id: str | None = None
    ) -> HandshakeRequest:
        actions = [RequestedAction("SessionType", {"SessionType": session_type, "Properties": properties})]
        if kms_key_id is not None:
            actions.append(RequestedAction("KMSEncryption", {"KMSKeyId": kms_key_id}))
        return cls(agent_version, tuple(actions))

    def to_json(self) -> bytes:
        return _json(
            {"AgentVersion": self.agent_version, "RequestedClientActions": [a.to_obj() for a in self.actions]}
        )

    @classmethod
    def from_json(cls, payload: bytes) -> HandshakeRequest:
        what = "handshake request"
        obj = _load_object(payload, what)
        requested = _objects(obj, "RequestedClientActions", what)
        if len(requested) > MAX_HANDSHAKE_ACTIONS:  # the agent asks for two at most; each is answered
            raise CodecError(f"{what}: more than {MAX_HANDSHAKE_ACTIONS} actions")
        actions = tuple(
            RequestedAction(_field(a, "ActionType", str, what, ""), a.get("ActionParameters"))
            for a in requested
        )
        if any(len(a.action_type) > MAX_ACTION_TYPE for a in actions):
            raise CodecError(f"{what}: an action type longer than {MAX_ACTION_TYPE} characters")
        return cls(_field(obj, "AgentVersion", str, what, ""), actions)


@dataclass(frozen=True, slots=True)
class ProcessedAction:
    action_type: str
    status: ActionStatus
    result: Any = None
    error: str = ""

    def to_obj(self) -> dict[str, Any]:
        return {
            "ActionType": self.action_type,
            "ActionStatus": int(self.status),
            "ActionResult": self.result,
            "Error": self.error,
        }


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    client_version: str
    actions: tuple[ProcessedAction, ...]
    errors: tuple[str, ...] | None = None

    def to_json(self) -> bytes:
        return _json(
            {
                "ClientVersion": self.client_version,
                "ProcessedClientActions": [a.to_obj() for a in self.actions],
                "Errors": None if self.errors is None else list(self.errors),
            }
        )

    @classmethod
    def from_json(cls, payload: bytes) -> HandshakeResponse:
        what = "handshake response"
        obj = _load_object(payload, what)
        statuses = (min(ActionStatus), max(ActionStatus))
        actions = tuple(
            ProcessedAction(
                _field(a, "ActionType", str, what, ""),
                ActionStatus(_int(a, "ActionStatus", what, statuses)),
                a.get("ActionResult"),
                _field(a, "Error", str, what, ""),
            )
            for a in _objects(obj, "ProcessedClientActions", what)
        )
        errors: list[Any] | None = _field(obj, "Errors", list, what, None)
        if errors is not None and not all(isinstance(e, str) for e in errors):
            raise CodecError(f"{what}: Errors must be a list of strings")
        return cls(
            _field(obj, "ClientVersion", str, what, ""), actions, None if errors is None else tuple(errors)
        )


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    time_to_complete_ns: int
    customer_message: str = ""

    def to_json(self) -> bytes:
        return _json(
            {"HandshakeTimeToComplete": self.time_to_complete_ns, "CustomerMessage": self.customer_message}
        )

    @classmethod
    def from_json(cls, payload: bytes) -> HandshakeComplete:
        what = "handshake complete"
        obj = _load_object(payload, what)
        return cls(
            _int(obj, "HandshakeTimeToComplete", what, INT64, 0),
            _field(obj, "CustomerMessage", str, what, ""),
        )


@dataclass(frozen=True, slots=True)
class SizeData:
    cols: int
    rows: int

    def to_json(self) -> bytes:
        return _json({"cols": self.cols, "rows": self.rows})

    @classmethod
    def from_json(cls, payload: bytes) -> SizeData:
        obj = _load_object(payload, "size")
        return cls(_int(obj, "cols", "size", UINT32), _int(obj, "rows", "size", UINT32))


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    message_id: str
    created_date: str
    destination_id: str
    session_id: str
    output: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        return _json(
            {
                "MessageId": self.message_id,
                "CreatedDate": self.created_date,
                "DestinationId": self.destination_id,
                "SessionId": self.session_id,
                "MessageType": MessageType.CHANNEL_CLOSED.value,
                "SchemaVersion": self.schema_version,
                "Output": self.output,
            }
        )

    @classmethod
    def from_json(cls, payload: bytes) -> ChannelClosed:
        what = "channel_closed"
        obj = _load_object(payload, what)
        return cls(
            _field(obj, "MessageId", str, what, ""),
            _field(obj, "CreatedDate", str, what, ""),
            _field(obj, "DestinationId", str, what, ""),
            _field(obj, "SessionId", str, what, ""),
            _field(obj, "Output", str, what, ""),
            _int(obj, "SchemaVersion", what, UINT32, SCHEMA_VERSION),
        )


@dataclass(frozen=True, slots=True)
class OpenDataChannel:
    """The text frame a client sends first on every (re)connected websocket (§3.1)."""

    token_value: str
    client_id: str
    client_version: str
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    schema_version: str = "1.0"

    def to_json(self) -> str:
        return json.dumps(
            {
                "MessageSchemaVersion": self.schema_version,
                "RequestId": self.request_id,
                "TokenValue": self.token_value,
                "ClientId": self.client_id,
                "ClientVersion": self.client_version,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> OpenDataChannel:
        """Requires the four fields every plugin sends (ClientVersion is absent from older plugins).

        Only the token's type is enforced: other clients send e.g. ``"MessageSchemaVersion": 1``.
        """
        what = "open data channel"
        obj = _load_object(text.encode() if isinstance(text, str) else text, what)
        missing = [k for k in ("MessageSchemaVersion", "RequestId", "ClientId") if obj.get(k) is None]
        if missing:
            raise CodecError(f"{what}: missing {', '.join(missing)}")
        return cls(
            token_value=_field(obj, "TokenValue", str, what),
            client_id=str(obj["ClientId"]),
            client_version=str(obj.get("ClientVersion", "")),
            request_id=str(obj["RequestId"]),
            schema_version=str(obj["MessageSchemaVersion"]),
        )


_FLAG = struct.Struct(">I")


def flag_payload(flag: PortFlag) -> bytes:
    return _FLAG.pack(flag)


def parse_flag(payload: bytes) -> int:
    if len(payload) != _FLAG.size:
        raise CodecError(f"flag payload must be 4 bytes, got {len(payload)}")
    value: int = _FLAG.unpack(payload)[0]
    return value


_EXIT_CODE = re.compile(rb"\s*EXIT_CODE:\s*(-?\d{1,10})\s*")
INT32 = (-(2**31), 2**31 - 1)


def exit_code_payload(code: int) -> bytes:
    return f"EXIT_CODE: {code}".encode()


def parse_exit_code(payload: bytes) -> int:
    match = _EXIT_CODE.fullmatch(payload)
    if match is None:
        raise CodecError(f"exit code payload {payload[:40]!r} is not 'EXIT_CODE: <n>'")
    code = int(match.group(1))
    if not INT32[0] <= code <= INT32[1]:
        raise CodecError(f"exit code {code} is out of range")
    return code


def version_gt(version: str, other: str) -> bool:
    """Numeric dotted comparison as the plugin does it; different component counts compare false."""
    a, b = version.split("."), other.split(".")
    if len(a) != len(b):
        return False
    try:
        return [int(x) for x in a] > [int(x) for x in b]
    except ValueError:
        return False


def version_ge(version: str, other: str) -> bool:
    """Lenient comparison (missing components count as 0) as the agent applies to ClientVersion."""
    try:
        a, b = [int(x) for x in version.split(".")], [int(x) for x in other.split(".")]
    except ValueError:
        return False
    width = max(len(a), len(b))
    return a + [0] * (width - len(a)) >= b + [0] * (width - len(b))
