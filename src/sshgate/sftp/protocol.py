"""SFTP version 3 messages (draft-ietf-secsh-filexfer-02, as OpenSSH speaks it): decoding only
what the gateway audits and gates, and building the one reply it ever writes itself.

Pure functions over bytes: no I/O, no state.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

INIT, VERSION = 1, 2
OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 3, 4, 5, 6, 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME, READLINK, SYMLINK = range(11, 21)
STATUS, HANDLE, DATA, NAME, ATTRS = 101, 102, 103, 104, 105
EXTENDED, EXTENDED_REPLY = 200, 201

FXF_READ, FXF_WRITE, FXF_APPEND, FXF_CREAT, FXF_TRUNC, FXF_EXCL = 1, 2, 4, 8, 16, 32
_MODIFYING_FLAGS = FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC
_FLAG_NAMES = ((FXF_READ, "read"), (FXF_WRITE, "write"), (FXF_APPEND, "append"),
               (FXF_CREAT, "create"), (FXF_TRUNC, "truncate"), (FXF_EXCL, "excl"))  # fmt: skip

FX_OK, FX_EOF, FX_PERMISSION_DENIED = 0, 1, 3
STATUS_NAMES = ("ok", "eof", "no_such_file", "permission_denied", "failure", "bad_message",
                "no_connection", "connection_lost", "op_unsupported")  # fmt: skip

MAX_PACKET = 1 << 20
"""Largest packet accepted (OpenSSH's own limit is 256 KiB): buffering never exceeds one packet."""

Operation = Literal["write", "remove", "rename", "mkdir", "rmdir", "setstat"]
"""Mutating operations, as the policy request stage names them."""

_PATH_ONE = {LSTAT: "lstat", OPENDIR: "opendir", REMOVE: "remove", MKDIR: "mkdir", RMDIR: "rmdir",
             REALPATH: "realpath", STAT: "stat", READLINK: "readlink", SETSTAT: "setstat"}  # fmt: skip
_HANDLE_ONE = {CLOSE: "close", FSTAT: "fstat", FSETSTAT: "fsetstat", READDIR: "readdir"}
_PATH_TWO = {RENAME: "rename", SYMLINK: "symlink"}
_EXTENDED_TWO = {"posix-rename@openssh.com": "rename", "hardlink@openssh.com": "link"}


class SftpProtocolError(Exception):
    """Bytes that are not SFTP v3; the channel cannot be followed (or gated) any further."""


@dataclass(frozen=True, slots=True)
class Request:
    """A client request. ``name`` is the operation (``open``, ``rename``, ``posix-rename`` maps to
    ``rename``...); ``length`` is the byte count of a READ or WRITE."""

    type: int
    id: int | None
    name: str
    path: str | None = None
    target: str | None = None
    handle: bytes | None = None
    pflags: int = 0
    length: int = 0


@dataclass(frozen=True, slots=True)
class Reply:
    """A server reply; ``length`` is the payload size of DATA."""

    type: int
    id: int | None
    code: int = FX_OK
    message: str = ""
    handle: bytes | None = None
    length: int = 0


@dataclass(frozen=True, slots=True)
class Mutation:
    """What the policy request stage sees of a mutating request."""

    operation: Operation
    path: str
    target: str | None = None


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u32(self) -> int:
        end = self.pos + 4
        if end > len(self.data):
            raise SftpProtocolError("truncated packet")
        (value,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos = end
        return int(value)

    def raw(self) -> bytes:
        size = self.u32()
        end = self.pos + size
        if end > len(self.data):
            raise SftpProtocolError("truncated string")
        value = self.data[self.pos : end]
        self.pos = end
        return bytes(value)

    def text(self) -> str:
        # backslashreplace: a path with invalid UTF-8 stays distinct and visible, never "fixed".
        return self.raw().decode("utf-8", "backslashreplace")

    def skip(self, size: int) -> None:
        self.pos += size


def parse_request(ptype: int, body: bytes, length: int | None = None) -> Request:
    """Decode a client packet from its type and body (the bytes after the type byte).

    ``body`` may be a prefix of a WRITE packet whose data was not kept; ``length`` is then the
    full body length, from which the data size follows.
    """
    r = _Reader(body)
    if ptype == INIT:
        return Request(ptype, None, "init")
    rid = r.u32()
    if ptype == OPEN:
        path = r.text()
        return Request(ptype, rid, "open", path=path, pflags=r.u32())
    if ptype in (READ, WRITE):
        handle = r.raw()
        r.skip(8)
        size = r.u32()
        if ptype == WRITE and length is not None:
            size = length - r.pos
        return Request(ptype, rid, "read" if ptype == READ else "write", handle=handle, length=size)
    if ptype in _PATH_ONE:
        return Request(ptype, rid, _PATH_ONE[ptype], path=r.text())
    if ptype in _HANDLE_ONE:
        return Request(ptype, rid, _HANDLE_ONE[ptype], handle=r.raw())
    if ptype in _PATH_TWO:
        first, second = r.text(), r.text()
        if ptype == SYMLINK:  # OpenSSH sends (target, link), the reverse of the draft
            return Request(ptype, rid, "symlink", path=second, target=first)
        return Request(ptype, rid, "rename", path=first, target=second)
    if ptype == EXTENDED:
        name = r.text()
        if name in _EXTENDED_TWO:
            first = r.text()
            return Request(ptype, rid, _EXTENDED_TWO[name], path=first, target=r.text())
        return Request(ptype, rid, name)
    return Request(ptype, rid, f"type-{ptype}")


def parse_reply(ptype: int, body: bytes, length: int | None = None) -> Reply:
    """Decode a server packet; ``body``/``length`` as for :func:`parse_request`."""
    r = _Reader(body)
    if ptype == VERSION:
        return Reply(ptype, None)
    rid = r.u32()
    if ptype == STATUS:
        code = r.u32()
        message = r.text() if r.pos < len(body) else ""
        return Reply(ptype, rid, code=code, message=message)
    if ptype == HANDLE:
        return Reply(ptype, rid, handle=r.raw())
    if ptype == DATA:
        size = r.u32()
        return Reply(ptype, rid, length=(length - r.pos) if length is not None else size)
    return Reply(ptype, rid)


def mutation(request: Request, handle_path: str | None = None) -> Mutation | None:
    """The mutating operation a request performs, or None for reads and queries.

    ``handle_path`` is the path behind the handle of an FSETSTAT (unknown: ``"?"``).
    """
    name = request.name
    if name == "open":
        if request.pflags & _MODIFYING_FLAGS and request.path is not None:
            return Mutation("write", request.path)
        return None
    if name in ("remove", "mkdir", "rmdir", "setstat") and request.path is not None:
        return Mutation(name, request.path)  # type: ignore[arg-type]
    if name == "fsetstat":
        return Mutation("setstat", handle_path or "?")
    if name == "rename" and request.path is not None:
        return Mutation("rename", request.path, request.target)
    if name in ("symlink", "link") and request.path is not None:
        return Mutation("write", request.path, request.target)
    return None


def open_mode(pflags: int) -> str:
    """``read``, ``write|create|truncate``...: the open flags in words."""
    return "|".join(word for bit, word in _FLAG_NAMES if pflags & bit) or "none"


def status_name(code: int) -> str:
    return STATUS_NAMES[code] if 0 <= code < len(STATUS_NAMES) else f"code-{code}"


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def status_packet(
    request_id: int, message: str, code: int = FX_PERMISSION_DENIED, language: str = ""
) -> bytes:
    """A whole ``SSH_FXP_STATUS`` packet answering ``request_id`` (default: permission denied)."""
    body = (
        struct.pack(">BII", STATUS, request_id, code) + _string(message.encode()) + _string(language.encode())
    )
    return struct.pack(">I", len(body)) + body
