"""A forward's destination as the policy sees it is the address the resource connects to: every
spelling of an IP literal a resolver reads becomes that address; names stay as sent."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sshgate.gateway.destination import BadDestination, canonical_host, forward_destination

BOUNDED = settings(max_examples=300, deadline=None)


@pytest.mark.parametrize(
    ("sent", "seen"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F.0.0.1", "127.0.0.1"),
        ("127.000.000.001", "127.0.0.1"),
        ("127.0.0.1 anything", "127.0.0.1"),  # glibc's inet_aton stops at white space
        ("1.2.3", "1.2.0.3"),
        ("0", "0.0.0.0"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::FFFF:7f00:1", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "127.0.0.1"),
        ("[127.1]", "127.0.0.1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("[::1]", "::1"),
        # Not IP literals: names, resolved on the resource as sent
        ("localhost", "localhost"),
        ("db.internal", "db.internal"),
        ("127.0.0.1.", "127.0.0.1."),
        (" 127.0.0.1", " 127.0.0.1"),
        ("1.2.3.256", "1.2.3.256"),
        ("08", "08"),
        ("0x", "0x"),
        ("4294967296", "4294967296"),
        ("[db]", "[db]"),
        ("1" * 5000, "1" * 5000),  # no exception from int()'s 4300-digit limit either
        ("1.1.1." + "9" * 5000, "1.1.1." + "9" * 5000),
        ("0x" + "0" * 5000 + "7f000001", "127.0.0.1"),  # leading zeros are no digits (glibc agrees)
    ],
)
def test_spellings(sent: str, seen: str) -> None:
    assert canonical_host(sent) == seen


def test_ports_outside_1_to_65535_and_nul_bytes_are_refused() -> None:
    assert forward_destination("2130706433", 65535) == ("127.0.0.1", 65535)
    assert forward_destination("db", 1) == ("db", 1)
    for port in (0, 65536, 107011):
        with pytest.raises(BadDestination, match=f"port {port} is outside 1-65535"):
            forward_destination("127.0.0.1", port)
    with pytest.raises(BadDestination, match="NUL byte"):
        forward_destination("127.0.0.1\0evil", 22)
    for zoned in ("::1%1", "::1%0", "[::1%4294967295]", "fe80::1%eth0"):  # the resource drops the zone
        with pytest.raises(BadDestination, match="zone"):
            forward_destination(zoned, 22)


def _spelled(value: int, style: str) -> str:
    return {"dec": str(value), "oct": f"0{value:o}", "hex": f"0x{value:x}"}[style]


@st.composite
def inet_aton_spellings(draw: st.DrawFn) -> str:
    """One to four parts in any base, each sometimes out of its range, and sometimes a tail."""
    count = draw(st.integers(1, 4))
    widths = [8] * (count - 1) + [8 * (5 - count)]
    parts = [
        _spelled(draw(st.integers(0, (1 << w) + 2)), draw(st.sampled_from(["dec", "oct", "hex"])))
        for w in widths
    ]
    tail = draw(st.sampled_from(["", " ", "\tjunk", ".", "x"]))
    return ".".join(parts) + tail


@BOUNDED
@given(inet_aton_spellings())
def test_ipv4_reads_as_glibcs_inet_aton(sent: str) -> None:
    # The test command runs on Debian: socket.inet_aton is glibc's, the reader upstreams use.
    try:
        expected = socket.inet_ntoa(socket.inet_aton(sent))
    except OSError:
        expected = sent
    assert canonical_host(sent) == expected


@BOUNDED
@given(st.ip_addresses(v=6), st.booleans(), st.booleans())
def test_ipv6_reads_as_getaddrinfo_numeric(
    address: ipaddress.IPv6Address, exploded: bool, bracketed: bool
) -> None:
    sent = address.exploded if exploded else str(address)
    read = socket.getaddrinfo(sent, None, socket.AF_INET6, flags=socket.AI_NUMERICHOST)[0][4][0]
    mapped = ipaddress.IPv6Address(read).ipv4_mapped
    assert canonical_host(f"[{sent}]" if bracketed else sent) == str(mapped or read)


@BOUNDED
@given(st.text("0123456789abcdefxX.:[] \t", max_size=24))
def test_whatever_the_resolver_reads_as_an_address_is_that_address(sent: str) -> None:
    try:
        addr = socket.getaddrinfo(sent, None, flags=socket.AI_NUMERICHOST)[0][4]
    except (OSError, UnicodeError):
        return
    read = ipaddress.ip_address(addr[0])
    if isinstance(read, ipaddress.IPv6Address):
        read = read.ipv4_mapped or read
    assert canonical_host(sent) == str(read)
