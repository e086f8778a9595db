"""The pure parts: sealed records and the supervisor's frames."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sshgate.state import rpc
from sshgate.state.seal import Sealer

KEY = "k" * 32


def test_a_sealed_record_opens_only_with_its_key_and_context() -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal("lock:1.2.3.4", {"a": "1.2.3.4", "until": 5.0})
    assert sealer.open("lock:1.2.3.4", sealed) == {"a": "1.2.3.4", "until": 5.0}
    assert sealer.open("lock:1.2.3.5", sealed) is None  # copied under another key
    assert Sealer("x" * 32).open("lock:1.2.3.4", sealed) is None
    tampered = sealed.replace("5.0", "9.0")
    assert sealer.open("lock:1.2.3.4", tampered) is None
    for junk in (None, "", ".", "abc", "0" * 64 + ".[]", b"\xff\xfe"):
        assert sealer.open("lock:1.2.3.4", junk) is None
    assert KEY not in sealed


@given(st.binary(max_size=2000), st.text(max_size=40))
def test_output_frames_round_trip_and_refuse_any_change(data: bytes, context: str) -> None:
    sealer = Sealer(KEY)
    frame = sealer.encrypt(context, data)
    assert sealer.decrypt(context, frame) == data
    assert sealer.decrypt(context + "x", frame) is None
    flipped = bytes([frame[-1] ^ 1])
    assert sealer.decrypt(context, frame[:-1] + flipped) is None
    if len(data) >= 16:  # a long plaintext does not appear in its frame
        assert data not in frame


def test_a_private_record_is_unreadable_and_opens_only_with_its_key_and_context() -> None:
    sealer = Sealer(KEY)
    doc = {"email": "a@corp.com", "csrf": "secret-token-value"}
    sealed = sealer.seal_private("web:session:abc", doc)
    assert sealer.open_private("web:session:abc", sealed) == doc
    assert b"a@corp.com" not in sealed and b"secret-token-value" not in sealed
    assert sealer.open_private("web:session:abd", sealed) is None  # copied under another key
    assert sealer.open_private("web:link:abc", sealed) is None  # or as another kind
    assert Sealer("x" * 32).open_private("web:session:abc", sealed) is None
    assert sealer.open_private("web:session:abc", sealed[:-1] + bytes([sealed[-1] ^ 1])) is None
    assert sealer.decrypt("web:session:abc", sealed) is None  # not the live output's key
    for junk in (None, b"", b"x" * 40):
        assert sealer.open_private("web:session:abc", junk) is None


@given(st.dictionaries(st.text(max_size=10), st.one_of(st.integers(), st.text(max_size=20)), max_size=8))
def test_frames_round_trip(message: dict[str, object]) -> None:
    encoded = rpc.encode(message)
    assert int.from_bytes(encoded[:4], "big") == len(encoded) - 4
    assert rpc.decode(encoded[4:]) == message


def test_oversized_or_non_object_frames_are_refused() -> None:
    async def read(raw: bytes) -> dict[str, object]:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await rpc.read_frame(reader)

    loop = asyncio.new_event_loop()
    for raw in ((rpc.MAX_FRAME + 1).to_bytes(4, "big"), b"\x00\x00\x00\x02[]", b"\x00\x00\x00\x01{"):
        with pytest.raises(rpc.FrameError):
            loop.run_until_complete(read(raw))
    loop.close()
