"""Property tests of the PROXY header parser (pure)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sshgate.proxy_header import MAX_HEADER, ProxyHeaderError, parse
from tests.support.proxy import v1_header, v2_header

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str)
ports = st.integers(0, 65535)
clients = st.tuples(st.one_of(ipv4, ipv6), ports)
# A client and the address it connected to, of one family.
Endpoints = tuple[tuple[str, int], tuple[str, int]]
endpoints = st.one_of(
    st.tuples(st.tuples(ipv4, ports), st.tuples(ipv4, ports)),
    st.tuples(st.tuples(ipv6, ports), st.tuples(ipv6, ports)),
)
trailing = st.binary(max_size=64)


@given(endpoints, trailing)
def test_v1_names_both_ends_and_leaves_what_follows(ends: Endpoints, rest: bytes) -> None:
    header = v1_header(*ends)
    parsed = parse(header + b"SSH-2.0-OpenSSH_9.2\r\n" + rest)
    assert parsed is not None
    assert (parsed.client, parsed.destination, parsed.length, parsed.version) == (*ends, len(header), 1)


@given(endpoints, st.binary(max_size=40), trailing)
def test_v2_names_both_ends_whatever_tlvs_follow(ends: Endpoints, tlv: bytes, rest: bytes) -> None:
    header = v2_header(*ends, tlv)
    parsed = parse(header + rest)
    assert parsed is not None
    assert (parsed.client, parsed.destination, parsed.length, parsed.version) == (*ends, len(header), 2)


@given(clients, st.sampled_from([1, 2]), st.data())
def test_every_truncated_header_asks_for_more(
    client: tuple[str, int], version: int, data: st.DataObject
) -> None:
    server = ("::1", 22) if ":" in client[0] else ("10.0.0.1", 22)
    header = v1_header(client, server) if version == 1 else v2_header(client, server)
    assert parse(header) is not None
    cut = data.draw(st.integers(0, len(header) - 1))
    assert parse(header[:cut]) is None


@given(st.binary(max_size=600))
def test_any_bytes_give_a_header_more_please_or_a_refusal(data: bytes) -> None:
    try:
        parsed = parse(data)
    except ProxyHeaderError:
        return
    if parsed is not None:
        assert 0 < parsed.length <= min(len(data), MAX_HEADER)
        if parsed.client is not None:
            ipaddress.ip_address(parsed.client[0])
            assert 0 <= parsed.client[1] <= 65535


def test_mapped_ipv4_local_and_unknown() -> None:
    parsed = parse(v2_header(("::ffff:203.0.113.7", 40000), ("::ffff:198.51.100.1", 22)))
    assert parsed is not None
    assert (parsed.client, parsed.destination) == (("203.0.113.7", 40000), ("198.51.100.1", 22))
    local = parse(v2_header(None))
    assert local is not None and (local.client, local.destination) == (None, None)
    unknown = parse(b"PROXY UNKNOWN\r\nSSH-2.0-x\r\n")
    assert unknown is not None and (unknown.client, unknown.destination, unknown.length) == (None, None, 15)


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY " + b"A" * 120,
        b"PROXY TCP4 1.2.3.4 5.6.7.8 \xff 2\r\n",
        # An IPv6 zone is free text: a line feed in it ends up in formal ssh-config's output, and
        # every zone would be another client address for the lockouts.
        b"PROXY TCP6 fe80::2 fe80::1%h\nProxyCommand=sh\t-c\t'id>PWNED'\n# 40000 2222\r\n",
        b"PROXY TCP6 fe80::2%0 ::1 40000 22\r\n",
        b"PROXY TCP6 fe80::2 ::1%eth0 40000 22\r\n",
        b"PROXY TCP4 1.2.3.4\n 5.6.7.8 1 2\r\n",
        v2_header(("1.2.3.4", 1))[:12] + b"\x31\x11\x00\x0c" + bytes(12),  # version 3
        v2_header(("1.2.3.4", 1))[:12] + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
        v2_header(("1.2.3.4", 1))[:12] + b"\x21\x12\x00\x0c" + bytes(12),  # UDP
        v2_header(("1.2.3.4", 1))[:12] + b"\x21\x31\x00\xd8" + bytes(216),  # unix sockets
        v2_header(("1.2.3.4", 1))[:12] + b"\x21\x11\x00\x04" + bytes(4),  # too short for TCP4
        v2_header(("1.2.3.4", 1))[:12] + b"\x21\x11\xff\xff",  # oversized: refused before buffering
    ],
)
def test_hostile_headers_are_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(data)
