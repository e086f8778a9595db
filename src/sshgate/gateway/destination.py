"""Where a ``direct-tcpip`` forward goes, in the one spelling the policy, the upstream and the
recording all see (docs/policy.md, request stage).

The resource resolves the host the client sent with getaddrinfo / inet_aton, which read
``127.1``, ``2130706433``, ``0x7f.1`` and ``0177.0.0.1`` as 127.0.0.1, ``0`` as 0.0.0.0 and
``::ffff:127.0.0.1`` as 127.0.0.1: a rule written against ``127.0.0.1`` has to see that address,
not the client's spelling of it. Names stay names; the resource resolves them.
"""

from __future__ import annotations

import ipaddress
import re

# One part of an inet_aton address: hex (0x...), octal (0...) or decimal, as glibc reads it.
_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")
_SPACE = re.compile(r"[ \t\n\v\f\r]")
_MAX_DIGITS = 11  # significant digits of 2**32 - 1 in octal; fewer in decimal and hex


class BadDestination(ValueError):
    """A forward no upstream can take as meant; ``reason`` is what the client reads."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def forward_destination(host: str, port: int) -> tuple[str, int]:
    """The host and port to ask the policy about and to connect to. A NUL byte (sshd ends the
    whole connection over it) and a port outside 1-65535 (the upstream would wrap it) are refused."""
    if "\0" in host:
        raise BadDestination("host name holds a NUL byte")
    if not 1 <= port <= 65535:
        raise BadDestination(f"port {port} is outside 1-65535")
    return canonical_host(host), port


def canonical_host(host: str) -> str:
    """An IP literal in any spelling a resolver reads as one, as its canonical address (an
    IPv4-mapped IPv6 address as the IPv4 address; brackets dropped); anything else unchanged.
    An IPv6 address with a zone (``::1%1``) raises :class:`BadDestination`."""
    inner = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    v4 = _inet_aton(inner)
    if v4 is not None:
        return str(v4)
    try:
        v6 = ipaddress.IPv6Address(inner)
    except ValueError:
        return host
    if v6.scope_id is not None:  # the resource ignores a zone on ::1 and reads the rest
        raise BadDestination("an IPv6 address with a zone (%) is not served")
    return str(v6.ipv4_mapped or v6)


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """glibc's inet_aton, the most lenient reader an upstream may use: one to four parts, each
    hex, octal or decimal, the last filling the remaining bytes, and anything after a white space
    ignored. Done here, not with ``socket.inet_aton``, so the gateway's own C library (musl,
    BSD) does not decide what the resource's reads."""
    parts = _SPACE.split(text, maxsplit=1)[0].split(".")
    if len(parts) > 4 or not all(_PART.fullmatch(p) for p in parts):
        return None
    if any(len(p.lstrip("0xX")) > _MAX_DIGITS for p in parts):  # too big in any base; and int()
        return None  # refuses strings of over 4300 digits with an exception
    values = [int(p, 16 if p[:2] in ("0x", "0X") else 8 if p.startswith("0") else 10) for p in parts]
    *leading, last = values
    if any(v > 255 for v in leading) or last >= 1 << (8 * (5 - len(values))):
        return None
    address = last
    for i, v in enumerate(leading):
        address |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(address)
