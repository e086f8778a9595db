"""SFTP version 3 messages (draft-ietf-secsh-filexfer-02, as OpenSSH speaks it): decoding only
what the gateway audits and gates, and building the one reply it ever writes itself.

Pure functions over bytes: no I/O, no state.
"""

from __future__ import annotations

import posixpath
import struct
from dataclasses import dataclass, replace

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

_PATH_ONE = {LSTAT: "lstat", OPENDIR: "opendir", REMOVE: "remove", MKDIR: "mkdir", RMDIR: "rmdir",
             REALPATH: "realpath", STAT: "stat", READLINK: "readlink", SETSTAT: "setstat"}  # fmt: skip
_HANDLE_ONE = {CLOSE: "close", FSTAT: "fstat", FSETSTAT: "fsetstat", READDIR: "readdir"}
_PATH_TWO = {RENAME: "rename", SYMLINK: "symlink"}

# Extended requests OpenSSH's sftp-server knows, by what their first arguments are. Only these
# are understood; any other is the operation ``extended:<name>`` (docs/policy.md).
_EXTENDED_TWO = {"posix-rename@openssh.com": "rename", "hardlink@openssh.com": "link"}
_EXTENDED_PATH = {"lsetstat@openssh.com": "lsetstat", "statvfs@openssh.com": "statvfs",
                  "expand-path@openssh.com": "expand-path"}  # fmt: skip
_EXTENDED_HANDLE = {"fstatvfs@openssh.com": "fstatvfs", "fsync@openssh.com": "fsync"}
# copy-data writes only through a handle whose open for write was already asked.
_EXTENDED_OTHER = {"limits@openssh.com": "limits", "home-directory": "home-directory",
                   "copy-data": "copy-data",
                   "users-groups-by-id@openssh.com": "users-groups-by-id"}  # fmt: skip
_MAX_NAME_SHOWN = 128

_CHANGES = {"remove": "remove", "mkdir": "mkdir", "rmdir": "rmdir", "setstat": "setstat",
            "lsetstat": "setstat", "rename": "rename", "symlink": "write", "link": "write"}  # fmt: skip
"""Path requests that change something, by the operation the policy request stage sees: a
symlink or hard link is a ``write`` (a new name), ``chmod -h`` (lsetstat) a ``setstat``."""


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
    """A server reply; ``length`` is the payload size of DATA, ``name`` the first file name of
    NAME, ``version`` the protocol version of VERSION."""

    type: int
    id: int | None
    code: int = FX_OK
    message: str = ""
    handle: bytes | None = None
    length: int = 0
    name: str | None = None
    version: int = 0


@dataclass(frozen=True, slots=True)
class Mutation:
    """What the policy request stage sees of a request that can change something: ``operation``
    is ``write``, ``remove``, ``rename``, ``mkdir``, ``rmdir``, ``setstat`` or ``extended:<name>``."""

    operation: str
    path: str | None = None
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
        return _extended(rid, r)
    return Request(ptype, rid, f"type-{ptype}")


def _extended(rid: int, r: _Reader) -> Request:
    name = r.text()
    if name in _EXTENDED_TWO:
        first, second = r.text(), r.text()
        if name == "hardlink@openssh.com":  # (existing file, new link): path is the new name
            return Request(EXTENDED, rid, "link", path=second, target=first)
        return Request(EXTENDED, rid, _EXTENDED_TWO[name], path=first, target=second)
    if name in _EXTENDED_PATH:
        return Request(EXTENDED, rid, _EXTENDED_PATH[name], path=r.text())
    if name in _EXTENDED_HANDLE:
        return Request(EXTENDED, rid, _EXTENDED_HANDLE[name], handle=r.raw())
    if name in _EXTENDED_OTHER:
        return Request(EXTENDED, rid, _EXTENDED_OTHER[name])
    if len(name) > _MAX_NAME_SHOWN:  # shown in full it would flood the audit log
        name = f"{name[:_MAX_NAME_SHOWN]}...({len(name)} characters)"
    return Request(EXTENDED, rid, f"extended:{name}")


def parse_reply(ptype: int, body: bytes, length: int | None = None) -> Reply:
    """Decode a server packet; ``body``/``length`` as for :func:`parse_request`."""
    r = _Reader(body)
    if ptype == VERSION:
        return Reply(ptype, None, version=r.u32())
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
    if ptype == NAME:
        return Reply(ptype, rid, name=r.text() if r.u32() else None)
    return Reply(ptype, rid)


def mutation(request: Request, handle_path: str | None = None) -> Mutation | None:
    """The change a request can make, or None for reads and queries.

    ``handle_path`` is the path behind the handle of an FSETSTAT (None: not known).
    """
    name = request.name
    if name == "open":
        return Mutation("write", request.path) if request.pflags & _MODIFYING_FLAGS else None
    if name in _CHANGES:
        return Mutation(_CHANGES[name], request.path, request.target)
    if name == "fsetstat":
        return Mutation("setstat", handle_path)
    if name.startswith("extended:"):
        return Mutation(name)
    return None


def absolute(path: str, cwd: str) -> str:
    """``path`` as the server resolves it from its working directory ``cwd``, normalised
    lexically: absolute, no ``.``, ``..`` or repeated slashes (symbolic links are not followed).

    A path with a NUL byte is returned as sent: a server reading it as a C string stops there,
    so no normal form tells what it would act on (the gate refuses such a path)."""
    if "\0" in path:
        return path
    normal = posixpath.normpath(posixpath.join(cwd, path))
    return "/" + normal.lstrip("/")  # POSIX keeps a leading "//"; policies must not see one


def resolved(request: Request, cwd: str) -> Request:
    """``request`` with its paths absolute (:func:`absolute`). A symlink's target is stored as
    written and resolved from the link's directory, so it is shown from there."""
    if request.path is None and request.target is None:
        return request
    path = absolute(request.path, cwd) if request.path is not None else None
    base = posixpath.dirname(path) if request.name == "symlink" and path is not None else cwd
    target = absolute(request.target, base) if request.target is not None else None
    return replace(request, path=path, target=target)


def realpath_packet(request_id: int, path: str) -> bytes:
    """A whole ``SSH_FXP_REALPATH`` request (the gateway asks for the server's working directory)."""
    body = struct.pack(">BI", REALPATH, request_id) + _string(path.encode())
    return struct.pack(">I", len(body)) + body


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
