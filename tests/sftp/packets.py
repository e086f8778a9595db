"""Hand-built SFTP v3 packets for the tests."""

from __future__ import annotations

import struct

from sshgate.sftp import protocol as p


def s(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack(">I", len(raw)) + raw


def packet(ptype: int, *parts: bytes) -> bytes:
    body = bytes([ptype]) + b"".join(parts)
    return struct.pack(">I", len(body)) + body


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def init() -> bytes:
    return packet(p.INIT, u32(3))


def version() -> bytes:
    return packet(p.VERSION, u32(3))


def open_(rid: int, path: str, pflags: int) -> bytes:
    return packet(p.OPEN, u32(rid), s(path), u32(pflags), u32(0))


def handle(rid: int, h: bytes) -> bytes:
    return packet(p.HANDLE, u32(rid), s(h))


def write(rid: int, h: bytes, offset: int, data: bytes) -> bytes:
    return packet(p.WRITE, u32(rid), s(h), struct.pack(">Q", offset), s(data))


def read(rid: int, h: bytes, offset: int, length: int) -> bytes:
    return packet(p.READ, u32(rid), s(h), struct.pack(">Q", offset), u32(length))


def data(rid: int, payload: bytes) -> bytes:
    return packet(p.DATA, u32(rid), s(payload))


def status(rid: int, code: int = 0, message: str = "") -> bytes:
    return packet(p.STATUS, u32(rid), u32(code), s(message), s(""))


def close(rid: int, h: bytes) -> bytes:
    return packet(p.CLOSE, u32(rid), s(h))


def path_op(ptype: int, rid: int, *paths: str) -> bytes:
    attrs = u32(0) if ptype in (p.MKDIR, p.SETSTAT) else b""
    return packet(ptype, u32(rid), *(s(x) for x in paths), attrs)


def extended(rid: int, name: str, *paths: str) -> bytes:
    return packet(p.EXTENDED, u32(rid), s(name), *(s(x) for x in paths))
