from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sshgate.sftp import protocol as p
from sshgate.sftp.tracker import Framer, SftpTracker, Verdict
from tests.sftp import packets as k

H1, H2, H3 = b"h1", b"h2", b"dir"
BIG = bytes(range(256)) * 400  # 102400 bytes

# (client packet, server reply) steps of one session
STEPS: list[tuple[bytes, bytes]] = [
    (k.init(), k.version()),
    (k.open_(1, "/up.txt", p.FXF_WRITE | p.FXF_CREAT | p.FXF_TRUNC), k.handle(1, H1)),
    (k.write(2, H1, 0, b"hello "), k.status(2)),
    (k.write(3, H1, 6, BIG), k.status(3)),
    (k.close(4, H1), k.status(4)),
    (k.open_(5, "/down.txt", p.FXF_READ), k.handle(5, H2)),
    (k.read(6, H2, 0, 32768), k.data(6, BIG[:5000])),
    (k.read(7, H2, 5000, 32768), k.status(7, p.FX_EOF, "EOF")),
    (k.path_op(p.STAT, 8, "/down.txt"), k.packet(p.ATTRS, k.u32(8), k.u32(0))),
    (k.close(9, H2), k.status(9)),
    (k.path_op(p.OPENDIR, 10, "/"), k.handle(10, H3)),
    (k.packet(p.READDIR, k.u32(11), k.s(H3)), k.status(11, p.FX_EOF)),
    (k.close(12, H3), k.status(12)),
    (k.path_op(p.REMOVE, 13, "/gone"), k.status(13, 2, "No such file")),
    (k.path_op(p.RENAME, 14, "/a", "/b"), k.status(14)),
    (k.extended(15, "posix-rename@openssh.com", "/b", "/c"), k.status(15)),
    (k.path_op(p.MKDIR, 16, "/d"), k.status(16)),
    (k.path_op(p.RMDIR, 17, "/d"), k.status(17)),
    (k.path_op(p.SETSTAT, 18, "/c"), k.status(18)),
    (k.open_(19, "/c", p.FXF_WRITE), k.handle(19, H1)),
    (k.packet(p.FSETSTAT, k.u32(20), k.s(H1), k.u32(0)), k.status(20)),
    (k.path_op(p.SYMLINK, 21, "/c", "/link"), k.status(21, p.FX_PERMISSION_DENIED, "denied")),
]


def ev(op: str, path: str | None, status: str = "ok", **extra: Any) -> dict[str, Any]:
    doc = {"op": op, "path": path, "target": extra.pop("target", None), "bytes": extra.pop("bytes", None)}
    return {**doc, "status": status, **extra}


EXPECTED = [
    ev("open", "/up.txt", mode="write|create|truncate"),
    ev("close", "/up.txt", bytes={"read": 0, "written": 6 + len(BIG)}),
    ev("open", "/down.txt", mode="read"),
    ev("close", "/down.txt", bytes={"read": 5000, "written": 0}),
    ev("opendir", "/"),
    ev("remove", "/gone", "no_such_file"),
    ev("rename", "/a", target="/b"),
    ev("rename", "/b", target="/c"),
    ev("mkdir", "/d"),
    ev("rmdir", "/d"),
    ev("setstat", "/c"),
    ev("open", "/c", mode="write"),
    ev("setstat", "/c"),
    ev("symlink", "/link", "permission_denied", target="/c"),
]


def run(
    client_chunks: list[bytes], server_chunks: list[bytes], cwd: str | None = None
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    tracker = SftpTracker(events.append, cwd=cwd)
    for chunk in client_chunks:
        tracker.client_data(chunk)
    for chunk in server_chunks:
        tracker.server_data(chunk)
    tracker.close()
    return events


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def steps(client_cuts: list[int], server_cuts: list[int]) -> list[dict[str, Any]]:
    """STEPS in order, each request cut at ``client_cuts`` and its reply at ``server_cuts``: a
    client names a handle only after the tracker saw the reply that gave it."""
    events: list[dict[str, Any]] = []
    tracker = SftpTracker(events.append)
    for request, reply in STEPS:
        for chunk in split(request, client_cuts):
            tracker.client_data(chunk)
        for chunk in split(reply, server_cuts):
            tracker.server_data(chunk)
    tracker.close()
    return events


def test_one_session_in_whole_packets() -> None:
    # the handle reopened for /c was never closed: the channel end reports it
    assert steps([], []) == [*EXPECTED, ev("close", "/c", "unclosed", bytes={"read": 0, "written": 0})]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0), max_size=40), st.lists(st.integers(min_value=0), max_size=40))
def test_any_chunking_gives_the_same_events(client_cuts: list[int], server_cuts: list[int]) -> None:
    assert steps(client_cuts, server_cuts)[:-1] == EXPECTED


def test_write_data_is_skipped_not_buffered() -> None:
    framer = Framer(frozenset({p.WRITE}))
    big = k.write(1, H1, 0, b"x" * 900_000)
    seen = []
    for start in range(0, len(big), 65536):
        seen += framer.feed(big[start : start + 65536])
        assert len(framer._body) <= 512
    assert [(t, n) for t, _, n in seen] == [(p.WRITE, len(big) - 5)]
    assert p.parse_request(p.WRITE, seen[0][1], seen[0][2]).length == 900_000


def test_garbage_stops_tracking_with_one_error_event() -> None:
    events: list[dict[str, Any]] = []
    tracker = SftpTracker(events.append)
    tracker.client_data(struct.pack(">I", p.MAX_PACKET + 1) + b"\x03")
    tracker.client_data(k.path_op(p.REMOVE, 1, "/x"))
    tracker.server_data(k.status(1))
    assert [e["op"] for e in events] == ["error"]
    assert "out of range" in events[0]["message"]


def test_gate_returns_whole_packets_and_classifies_mutations() -> None:
    events: list[dict[str, Any]] = []
    tracker = SftpTracker(events.append)
    stream = b"".join(c for c, _ in STEPS)
    packets = []
    for start in range(0, len(stream), 7777):
        packets += tracker.client_packets(stream[start : start + 7777])
    assert [pk.data for pk in packets] == [c for c, _ in STEPS]
    verdicts = {pk.request.id: tracker.judge(pk.request) for pk in packets}
    changes = {rid: v.change for rid, v in verdicts.items() if v.change}
    assert changes == {
        1: p.Mutation("write", "/up.txt"),
        13: p.Mutation("remove", "/gone"),
        14: p.Mutation("rename", "/a", "/b"),
        15: p.Mutation("rename", "/b", "/c"),
        16: p.Mutation("mkdir", "/d"),
        17: p.Mutation("rmdir", "/d"),
        18: p.Mutation("setstat", "/c"),
        19: p.Mutation("write", "/c"),
        20: p.Mutation("setstat", None),  # its handle's reply was never fed here: the gate refuses it
        21: p.Mutation("write", "/link", "/c"),
    }
    assert verdicts[20].refusal == "the handle is not open, or is closing"


def _gated(tracker: SftpTracker, *packets: bytes) -> list[Verdict]:
    """Each packet judged, then sent unless refused: the gate when the policy allows the rest."""
    verdicts = []
    for packet in tracker.client_packets(b"".join(packets)):
        verdicts.append(tracker.judge(packet.request))
        if verdicts[-1].refusal is None:
            tracker.sent(packet.request)
    return verdicts


def fsetstat(rid: int, h: bytes) -> bytes:
    return k.packet(p.FSETSTAT, k.u32(rid), k.s(h), k.u32(0))


def test_fsetstat_names_the_path_behind_its_handle() -> None:
    tracker = SftpTracker(lambda e: None)
    _gated(tracker, k.open_(1, "/etc/motd", p.FXF_WRITE))
    tracker.server_data(k.handle(1, H1))
    (packet,) = tracker.client_packets(fsetstat(2, H1))
    assert tracker.judge(packet.request) == Verdict(p.Mutation("setstat", "/etc/motd"))


def test_a_handle_is_not_trusted_once_its_close_is_sent() -> None:
    """Attack A: sftp-server gives a freed handle to the next OPEN, so after CLOSE(h) an FSETSTAT
    on h would act on whatever was opened next, not on the file h was opened with."""
    events: list[dict[str, Any]] = []
    tracker = SftpTracker(events.append)
    _gated(tracker, k.open_(1, "/tmp/harmless", p.FXF_READ))
    tracker.server_data(k.handle(1, H1))
    _, _, on_closing = _gated(tracker, k.close(2, H1), k.open_(3, "/protected", p.FXF_READ), fsetstat(4, H1))
    assert on_closing.refusal == "the handle is not open, or is closing"
    tracker.server_data(k.status(2))
    # the reused handle now names the file just opened
    tracker.server_data(k.handle(3, H1))
    [again] = _gated(tracker, fsetstat(5, H1))
    assert again == Verdict(p.Mutation("setstat", "/protected"))
    assert ev("close", "/tmp/harmless", bytes={"read": 0, "written": 0}) in events


def test_a_handle_is_unknown_until_its_open_is_answered() -> None:
    tracker = SftpTracker(lambda e: None)
    _, before = _gated(tracker, k.open_(1, "/protected", p.FXF_READ), fsetstat(2, H1))
    assert before.refusal == "the handle is not open, or is closing"


def test_an_outstanding_id_is_refused_and_replies_pair_with_the_first() -> None:
    """Attack B: OPEN and OPENDIR with one id; the first reply must not pair with the second."""
    tracker = SftpTracker(lambda e: None)
    [_, second] = _gated(tracker, k.open_(7, "/protected", p.FXF_READ), k.path_op(p.OPENDIR, 7, "/tmp"))
    assert second.refusal == "request id 7 is already outstanding"
    tracker.server_data(k.handle(7, H1))
    [check] = _gated(tracker, fsetstat(8, H1))
    assert check.change == p.Mutation("setstat", "/protected")
    [reused] = _gated(tracker, k.path_op(p.OPENDIR, 7, "/tmp"))  # answered: the id is free again
    assert reused.refusal is None


def test_an_observed_outstanding_id_stops_following() -> None:
    events: list[dict[str, Any]] = []
    tracker = SftpTracker(events.append)
    tracker.client_data(k.open_(7, "/protected", p.FXF_READ) + k.path_op(p.OPENDIR, 7, "/tmp"))
    assert tracker.failure == "request id 7 reused while outstanding"


def test_reads_count_on_the_handle_they_named_when_sent() -> None:
    """A READ answered after its handle's CLOSE was sent still counts for that file."""
    events: list[dict[str, Any]] = []
    tracker = SftpTracker(events.append)
    _gated(tracker, k.open_(1, "/f", p.FXF_READ))
    tracker.server_data(k.handle(1, H1))
    _gated(tracker, k.read(2, H1, 0, 10), k.close(3, H1))
    tracker.server_data(k.data(2, b"0123456789") + k.status(3))
    assert events[-1] == ev("close", "/f", bytes={"read": 10, "written": 0})


def test_deny_answers_permission_denied_and_records_the_block() -> None:
    events: list[dict[str, Any]] = []
    tracker = SftpTracker(events.append)
    (packet,) = tracker.client_packets(k.path_op(p.REMOVE, 42, "/etc/passwd"))
    reply = tracker.deny(packet.request, tracker.judge(packet.request).change, "blocked by policy")
    assert reply == k.status(42, p.FX_PERMISSION_DENIED, "blocked by policy")
    parsed = p.parse_reply(reply[4], reply[5:])
    assert (parsed.id, parsed.code, parsed.message) == (42, 3, "blocked by policy")
    tracker.server_data(k.status(42))  # a stray reply for the denied id changes nothing
    assert events == [ev("remove", "/etc/passwd", "blocked", message="blocked by policy")]


def test_init_cannot_be_denied() -> None:
    tracker = SftpTracker(lambda e: None)
    (packet,) = tracker.client_packets(k.init())
    with pytest.raises(p.SftpProtocolError):
        tracker.deny(packet.request, None, "no")


def test_gate_refuses_oversized_packets() -> None:
    tracker = SftpTracker(lambda e: None)
    with pytest.raises(p.SftpProtocolError):
        list(tracker.client_packets(struct.pack(">IB", p.MAX_PACKET + 1, p.WRITE)))


def test_truncated_body_is_a_protocol_error() -> None:
    with pytest.raises(p.SftpProtocolError):
        p.parse_request(p.OPEN, k.u32(1) + k.u32(99) + b"short")


def test_open_mode_words() -> None:
    assert p.open_mode(p.FXF_READ | p.FXF_WRITE | p.FXF_APPEND) == "read|write|append"
    assert p.open_mode(0) == "none"
    assert p.status_name(8) == "op_unsupported" and p.status_name(99) == "code-99"


def test_links_name_the_new_link_as_path() -> None:
    """OpenSSH sends symlink as (target, link) and hardlink@openssh.com as (existing, new link);
    both give ``path`` = the new link (docs/policy.md)."""
    hard = p.parse_request(p.EXTENDED, k.extended(1, "hardlink@openssh.com", "/old", "/new")[5:])
    soft = p.parse_request(p.SYMLINK, k.path_op(p.SYMLINK, 2, "/old", "/new")[5:])
    assert (hard.name, hard.path, hard.target) == ("link", "/new", "/old")
    assert (soft.name, soft.path, soft.target) == ("symlink", "/new", "/old")
