"""The PROXY protocol header (HAProxy's spec, v1 text and v2 binary) that a TCP load balancer puts
before a connection's first byte to say who the client is. Pure: bytes in, a verdict out.

Only what a gateway behind a load balancer needs: TCP over IPv4 or IPv6, and the LOCAL / UNKNOWN
forms a balancer uses for its own health checks (no addresses: the connection's own stand).
Everything else is refused, as is any header longer than :data:`MAX_HEADER`.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107  # the spec's bound, CRLF included
# v2 allows 64 KiB of TLVs; a balancer sends a few dozen bytes. More is refused, not buffered.
MAX_HEADER = 512
_V2_FIXED = 16


class ProxyHeaderError(ValueError):
    """Not a PROXY header this gateway accepts; the message says why, for the audit log."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header: the client's address, the address the client connected to (the balancer's,
    which ``formal ssh-config`` names; docs/operations.md, "Replicas"), both None for LOCAL /
    UNKNOWN, and the header's length."""

    client: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int
    version: int


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; None when more bytes are needed to tell."""
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    if V2_SIGNATURE.startswith(data[: len(V2_SIGNATURE)]) or V1_PREFIX.startswith(data[: len(V1_PREFIX)]):
        return None
    raise ProxyHeaderError("the connection does not start with a PROXY header")


_ADDRESS_CHARS = re.compile(r"[0-9A-Fa-f:.]{1,45}")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data[:V1_MAX]:
            raise ProxyHeaderError("PROXY v1 header without CRLF within 107 bytes")
        return None
    line = data[:end]
    if b"\n" in line:
        raise ProxyHeaderError("PROXY v1 header holds a line feed before its CRLF")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 header is not ASCII") from None
    parts = text.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(None, None, end + 2, 1)
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("PROXY v1 header is not 'PROXY TCP4|TCP6 SRC DST SPORT DPORT'")
    family = 4 if parts[1] == "TCP4" else 6
    source = (_address(parts[2], family), _port(parts[4]))
    destination = (_address(parts[3], family), _port(parts[5]))
    return ProxyHeader(source, destination, end + 2, 1)


def _address(text: str, family: int) -> str:
    """Digits, dots and colons only: ``ip_address`` also takes an IPv6 zone (``fe80::1%...``),
    whose text is free (and every zone would be another client address for the lockouts)."""
    if not _ADDRESS_CHARS.fullmatch(text):
        raise ProxyHeaderError("PROXY v1 header has an invalid address")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError("PROXY v1 header has an invalid address") from None
    if address.version != family:
        raise ProxyHeaderError("PROXY v1 address does not match its protocol")
    return plain_address(address)


def plain_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An IPv4 client reached over IPv6 (``::ffff:a.b.c.d``) is the IPv4 address, for lockouts."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5 or (len(text) > 1 and text[0] == "0"):
        raise ProxyHeaderError("PROXY v1 header has an invalid port")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError("PROXY v1 header has an invalid port")
    return port


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < _V2_FIXED:
        return None
    version_command, family, length = struct.unpack("!BBH", data[12:16])
    if version_command >> 4 != 2 or version_command & 0x0F not in (0, 1):
        raise ProxyHeaderError("PROXY v2 header with an unknown version or command")
    total = _V2_FIXED + length
    if total > MAX_HEADER:
        raise ProxyHeaderError(f"PROXY v2 header of {total} bytes exceeds {MAX_HEADER}")
    if len(data) < total:
        return None
    if version_command & 0x0F == 0:  # LOCAL: the balancer's own connection
        return ProxyHeader(None, None, total, 2)
    body = data[_V2_FIXED:total]
    if family == 0x11 and length >= 12:
        size = 4
    elif family == 0x21 and length >= 36:
        size = 16
    elif family == 0x00:
        return ProxyHeader(None, None, total, 2)
    else:
        raise ProxyHeaderError("PROXY v2 header is not TCP over IPv4 or IPv6")
    # Source and destination address (``size`` bytes each), then source and destination port.
    source_port, destination_port = struct.unpack_from("!HH", body, 2 * size)
    source = plain_address(ipaddress.ip_address(body[:size]))
    destination = plain_address(ipaddress.ip_address(body[size : 2 * size]))
    return ProxyHeader((source, source_port), (destination, destination_port), total, 2)
