"""Progress lines wait for the first session channel, then go to it alone."""

from __future__ import annotations

from sshgate.gateway.notices import MAX_HELD, Notices


def test_held_until_the_first_channel_then_written_in_order() -> None:
    notices = Notices()
    notices.send("starting app (i-1)")
    first: list[str] = []
    second: list[str] = []
    notices.attach("chan-1", first.append)
    notices.attach("chan-2", second.append)
    notices.send("waiting for the SSM agent…")
    assert first == ["sshgate: starting app (i-1)", "sshgate: waiting for the SSM agent…"]
    assert second == []
    notices.detach("chan-2")  # not the attached one: no effect
    notices.send("app is running")
    notices.detach("chan-1")
    notices.send("after the channel closed")
    assert first[-1] == "sshgate: app is running"


def test_a_connection_without_session_channels_holds_a_bounded_number() -> None:
    notices = Notices()
    for i in range(MAX_HELD * 3):
        notices.send(str(i))
    lines: list[str] = []
    notices.attach("chan", lines.append)
    assert lines == [f"sshgate: {i}" for i in range(MAX_HELD)]
