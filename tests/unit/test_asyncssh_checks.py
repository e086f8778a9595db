"""The limits asyncssh_checks adds: exact at the boundary, installed on asyncssh's channel."""

from __future__ import annotations

import pytest
from asyncssh.channel import SSHChannel, SSHServerChannel
from asyncssh.constants import MSG_CHANNEL_WINDOW_ADJUST
from asyncssh.misc import ProtocolError
from asyncssh.packet import SSHPacket, String

from sshgate import asyncssh_checks
from sshgate.asyncssh_checks import MAX_WINDOW, check_data_size, check_window_adjust


def test_data_up_to_the_announced_packet_size_passes_and_one_byte_more_does_not() -> None:
    check_data_size(32768, 32768)
    with pytest.raises(ProtocolError, match="max packet size"):
        check_data_size(32769, 32768)


def test_a_window_may_reach_2_32_minus_1_and_not_pass_it() -> None:
    check_window_adjust(MAX_WINDOW - 10, 10)
    with pytest.raises(ProtocolError, match="overflows"):
        check_window_adjust(MAX_WINDOW - 10, 11)


def test_apply_installs_the_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Undone after the test, so other tests (the fingerprints) see asyncssh's own code
    monkeypatch.setattr(SSHChannel, "_accept_data", SSHChannel._accept_data)
    monkeypatch.setattr(SSHServerChannel, "_process_env_request", SSHServerChannel._process_env_request)
    monkeypatch.setattr(
        SSHServerChannel, "_process_x11_req_request", SSHServerChannel._process_x11_req_request
    )
    handlers = SSHChannel._packet_handlers
    monkeypatch.setitem(handlers, MSG_CHANNEL_WINDOW_ADJUST, handlers[MSG_CHANNEL_WINDOW_ADJUST])  # type: ignore[arg-type]
    asyncssh_checks.apply()
    asyncssh_checks.apply()
    assert SSHChannel._accept_data is asyncssh_checks._checked_accept_data
    assert SSHChannel._packet_handlers[MSG_CHANNEL_WINDOW_ADJUST] is asyncssh_checks._checked_window_adjust
    assert SSHServerChannel._process_env_request is asyncssh_checks._checked_env_request  # type: ignore[comparison-overlap]
    assert SSHServerChannel._process_x11_req_request is asyncssh_checks._refused_x11_request  # type: ignore[comparison-overlap]


class _Channel:
    """What _checked_env_request reads of asyncssh's server channel."""

    def __init__(self, started: bool) -> None:
        self._session_started = started
        self._env: dict[bytes, bytes] = {}


def test_env_is_kept_before_the_session_starts_and_refused_after() -> None:
    before, after = _Channel(started=False), _Channel(started=True)
    request = String(b"LANG") + String(b"C")
    assert asyncssh_checks._checked_env_request(before, SSHPacket(request)) is True
    assert asyncssh_checks._checked_env_request(after, SSHPacket(request)) is False
    assert (before._env, after._env) == ({b"LANG": b"C"}, {})
