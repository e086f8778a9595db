"""Frames between the workers of one gateway and their supervisor: a 4-byte big-endian length,
then one JSON object. Pure; bytes travel as base64 in the ``d`` field."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from typing import Any

MAX_FRAME = 1 << 20
_LENGTH = struct.Struct(">I")


class FrameError(Exception):
    """A frame too large or not a JSON object: the peer is broken, drop the connection."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _LENGTH.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except ValueError:
        raise FrameError("frame is not JSON") from None
    if not isinstance(message, dict):
        raise FrameError("frame is not a JSON object")
    return message


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if length > MAX_FRAME:
        raise FrameError(f"frame of {length} bytes exceeds {MAX_FRAME}")
    return decode(await reader.readexactly(length))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)
