"""Hostile bytes against the SFTP parser, the tracker and the gate (property-based, seconds):
only :class:`SftpProtocolError` ever escapes, a stream cut at arbitrary points parses the same as
whole, and every path a policy sees is absolute and normalised."""

from __future__ import annotations

import asyncio
import contextlib
import posixpath

from hypothesis import given, settings
from hypothesis import strategies as st

from sshgate.gateway.sftp_gate import SftpGate
from sshgate.policy.decision import Decision
from sshgate.sftp import protocol as p
from sshgate.sftp.protocol import SftpProtocolError
from sshgate.sftp.tracker import Framer, SftpTracker
from tests.sftp import packets as k
from tests.sftp.test_tracker import run, split

FAST = settings(max_examples=300, deadline=None)
cuts = st.lists(st.integers(min_value=0), max_size=30)
# Mostly well-formed packets (so parsing goes deep), sometimes raw garbage between them.
any_type = st.integers(min_value=0, max_value=255)
text = st.text(alphabet=st.sampled_from("ab/.\\\0é~*"), max_size=12)
known_extended = st.sampled_from(
    ["posix-rename@openssh.com", "hardlink@openssh.com", "lsetstat@openssh.com", "fsync@openssh.com",
     "statvfs@openssh.com", "copy-data", "evil@example.com", "x" * 300]
)  # fmt: skip


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(min_value=0, max_value=5))
    rid = k.u32(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    if kind == 0:
        return k.path_op(draw(st.sampled_from([p.REMOVE, p.MKDIR, p.SETSTAT, p.STAT])), 1, draw(text))
    if kind == 1:
        return k.open_(draw(st.integers(0, 99)), draw(text), draw(st.integers(0, 63)))
    if kind == 2:
        return k.extended(draw(st.integers(0, 99)), draw(known_extended), draw(text), draw(text))
    if kind == 3:
        return k.packet(draw(any_type), rid, draw(st.binary(max_size=40)))
    if kind == 4:
        return k.write(
            draw(st.integers(0, 99)), draw(st.binary(max_size=8)), 0, draw(st.binary(max_size=600))
        )
    return draw(st.binary(max_size=24))


stream = st.lists(packets(), max_size=12).map(b"".join)


@FAST
@given(any_type, st.binary(max_size=64), st.one_of(st.none(), st.integers(0, 2**33)))
def test_parse_raises_only_its_error(ptype: int, body: bytes, length: int | None) -> None:
    for parse in (p.parse_request, p.parse_reply):
        with contextlib.suppress(SftpProtocolError):
            parse(ptype, body, length)


@FAST
@given(stream, cuts)
def test_framer_cut_anywhere_gives_the_same_packets(data: bytes, at: list[int]) -> None:
    for skim in (frozenset(), frozenset({p.WRITE, p.DATA})):
        assert _frames(Framer(skim, prefix=16), [data]) == _frames(Framer(skim, prefix=16), split(data, at))


def _frames(framer: Framer, chunks: list[bytes]) -> tuple[list[tuple[int, bytes, int]], bool]:
    out: list[tuple[int, bytes, int]] = []
    try:
        for chunk in chunks:
            out += framer.feed(chunk)
    except SftpProtocolError:
        return out, True
    return out, False


@FAST
@given(stream, stream, cuts, cuts)
def test_tracker_cut_anywhere_records_the_same(
    client: bytes, server: bytes, at: list[int], at2: list[int]
) -> None:
    """Observing never raises, and events do not depend on how the bytes were chunked."""
    assert run([client], [server], "/home/u") == run(split(client, at), split(server, at2), "/home/u")


@FAST
@given(stream, cuts)
def test_gating_cut_anywhere_gives_the_same_packets(data: bytes, at: list[int]) -> None:
    whole = _gate_packets([data])
    assert _gate_packets(split(data, at)) == whole
    ok, changes = whole
    assert b"".join(ok) == data[: sum(map(len, ok))]  # whole packets, in order, unaltered
    for change in changes:
        for path in (change.path, change.target):
            if path is not None and "\0" not in path:
                assert path == posixpath.normpath(path) and path.startswith("/") and not path.startswith("//")


def _gate_packets(chunks: list[bytes]) -> tuple[list[bytes], list[p.Mutation]]:
    tracker = SftpTracker(lambda e: None, cwd="/home/u")
    out = []
    try:
        for chunk in chunks:
            out += tracker.client_packets(chunk)
    except SftpProtocolError:
        pass
    changes = [tracker.judge(x.request).change for x in out]
    return [x.data for x in out], [c for c in changes if c is not None]


@FAST
@given(text, text)
def test_paths_are_absolute_and_normal(path: str, cwd: str) -> None:
    shown = p.absolute(path, p.absolute(cwd, "/"))
    if "\0" in path or "\0" in cwd:
        return
    assert shown.startswith("/") and not shown.startswith("//")
    assert shown == posixpath.normpath(shown) and p.absolute(shown, "/elsewhere") == shown
    assert "/../" not in shown + "/" and "/./" not in shown + "/"


@settings(max_examples=120, deadline=None)
@given(stream, cuts, st.booleans())
def test_gate_forwards_the_same_whatever_the_chunks(requests: bytes, at: list[int], allow: bool) -> None:
    """A client stream through the gate, whole or cut anywhere, reaches the server as the same
    bytes (blocked requests left out) with the same answers, and nothing but the gate's own
    failure report escapes."""
    data = k.init() + requests
    whole = _through_gate([data], allow)
    assert _through_gate(split(data, at), allow) == whole
    if not allow:  # what reached the server changes nothing
        tracker = SftpTracker(lambda e: None, cwd="/home/u")
        reached = tracker.client_packets(whole[0])
        assert [x.request.name for x in reached if tracker.judge(x.request).change is not None] == []


def _through_gate(chunks: list[bytes], allow: bool) -> tuple[bytes, bytes, list[str]]:
    async def drive() -> tuple[bytes, bytes, list[str]]:
        sent, answered, failures = bytearray(), bytearray(), []

        async def decide(change: p.Mutation) -> Decision:
            return Decision("allow" if allow else "block", "request", message="no")

        gate = SftpGate(
            SftpTracker(lambda e: None),
            sent.extend,
            answered.extend,
            answered.extend,
            decide,
            lambda request, reason: None,
            lambda: None,
            lambda: None,
            failures.append,
        )
        for chunk in chunks:
            gate.feed(chunk)
            await asyncio.sleep(0)
        gate.server_data(
            k.version() + k.packet(p.NAME, k.u32(0xFFFFFFFF), k.u32(1), k.s("/home/u"), k.s(""), k.u32(0))
        )
        for _ in range(50):
            await asyncio.sleep(0)
        gate.close()
        return bytes(sent), bytes(answered), failures

    return asyncio.run(drive())


def test_once_the_stream_is_no_longer_followed_nothing_more_of_the_chunk_goes_through() -> None:
    """Past the tracker's limit of unanswered requests the channel ends; the rest of the chunk
    that crossed it must not reach the server unjudged (a CLOSE would no longer untrust its
    handle)."""
    stats = b"".join(k.path_op(p.STAT, rid, "/x") for rid in range(1, 4200))

    async def drive() -> tuple[int, list[str]]:
        sent, failures = bytearray(), []

        async def decide(change: p.Mutation) -> Decision:
            return Decision("allow", "request")

        gate = SftpGate(SftpTracker(lambda e: None), sent.extend, lambda _d: None, lambda _d: None, decide,
                        lambda request, reason: None, lambda: None, lambda: None, failures.append)  # fmt: skip
        gate.feed(k.init())
        gate.server_data(
            k.version() + k.packet(p.NAME, k.u32(0xFFFFFFFF), k.u32(1), k.s("/home/u"), k.s(""), k.u32(0))
        )
        before = len(sent)
        gate.feed(stats)
        forwarded = len(sent) - before
        return forwarded // len(k.path_op(p.STAT, 1, "/x")), failures

    forwarded, failures = asyncio.run(drive())
    assert failures and "unanswered" in failures[0]
    assert forwarded == 4097  # the request that crossed the limit, and none after it
