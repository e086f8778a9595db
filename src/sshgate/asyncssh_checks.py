"""Limits on a peer's channel traffic that asyncssh (2.24) leaves unchecked. Two that RFC 4254
§5.2 sets, checked for every channel the gateway has, on both legs (a hostile client or a
hostile upstream), whichever receive path the packet took:

* data or extended data longer than the maximum packet size this side announced for the channel.
  asyncssh accepts anything within the window and the connection's 256 KiB packet limit, so a
  client could hand the relay 200 KB in one packet where 32 KiB was agreed. OpenSSH drops such a
  packet; here it ends the connection as a protocol error (the audit log's ``session.end``
  carries the reason), like a window overrun.
* a window adjust that takes the peer's window past 2^32 - 1 ("MUST NOT be increased above"):
  asyncssh's window is a Python int and grows without end; OpenSSH disconnects, and so does this.

Both sit where every path meets: ``SSHChannel._accept_data`` (asyncssh's ``_process_data`` and
``ssh_packet_path``'s lean path both deliver through it, after their window check) and the
channel's dispatch entry for ``MSG_CHANNEL_WINDOW_ADJUST``.

And one on a client's session channels: asyncssh keeps every ``env`` request, so one channel
could make the gateway hold any amount of memory (100,000 requests: 100 MB). OpenSSH's sshd keeps
at most 128 variables; here a channel keeps ``MAX_ENV`` of at most ``MAX_ENV_ENTRY`` bytes each
and refuses the rest (clients send ``env`` without asking for a reply; the gateway forwards only
the locale and time zone anyway). An ``env`` request after the shell, exec or subsystem request is
refused too, as sshd does: the session was set up with the environment it had then.

And asyncssh refuses a client's ``x11-req`` itself (the gateway serves no X11) without telling
anyone; here it is refused the same and the channel's session hears of it
(``x11_refused(screen)``, if it has one) to audit it: every request a client makes is seen
(docs/login.md, Binding).

tests/unit/test_asyncssh_tuning.py fingerprints the asyncssh code named in ``WRAPPED`` and
``RELIED_ON``.
"""

from __future__ import annotations

from typing import Any

from asyncssh.channel import SSHChannel, SSHServerChannel
from asyncssh.constants import MSG_CHANNEL_WINDOW_ADJUST
from asyncssh.misc import ProtocolError

WRAPPED = (
    "asyncssh.channel:SSHChannel._accept_data",
    "asyncssh.channel:SSHChannel._process_window_adjust",
    "asyncssh.channel:SSHServerChannel._process_env_request",
    "asyncssh.channel:SSHServerChannel._process_x11_req_request",
)
# It sets ``_session_started``, which the env check reads.
RELIED_ON = ("asyncssh.channel:SSHServerChannel._start_session",)
MAX_WINDOW = 0xFFFFFFFF
MAX_ENV = 64
MAX_ENV_ENTRY = 4096


def check_data_size(length: int, max_pktsize: int) -> None:
    """Refuse channel data longer than the packet size announced for the channel."""
    if length > max_pktsize:
        raise ProtocolError("Channel max packet size exceeded")


def check_window_adjust(window: int, adjust: int) -> None:
    """Refuse an adjust that would take the window past 2^32 - 1."""
    if window + adjust > MAX_WINDOW:
        raise ProtocolError("Window adjust overflows the window")


_accept_data: Any = SSHChannel._accept_data
_process_window_adjust: Any = SSHChannel._process_window_adjust


def _checked_accept_data(self: Any, data: bytes, datatype: Any = None) -> None:
    check_data_size(len(data), self._recv_pktsize)
    _accept_data(self, data, datatype)


def _checked_window_adjust(self: Any, pkttype: int, pktid: int, packet: Any) -> None:
    # The adjust is the first uint32 after the channel number asyncssh has read; a short packet
    # is left to asyncssh's own parsing, which refuses it.
    field = packet.get_remaining_payload()[:4]
    if len(field) == 4:
        check_window_adjust(self._send_window, int.from_bytes(field, "big"))
    _process_window_adjust(self, pkttype, pktid, packet)


def _checked_env_request(self: Any, packet: Any) -> bool:
    # asyncssh's own handler, with the limits: it stores the pair and says yes, whatever the count.
    key = packet.get_string()
    value = packet.get_string()
    packet.check_end()
    full = key not in self._env and len(self._env) >= MAX_ENV
    if self._session_started or len(key) + len(value) > MAX_ENV_ENTRY or full:
        return False
    self._env[key] = value
    return True


def _refused_x11_request(self: Any, packet: Any) -> bool:
    # asyncssh's own parsing, then a refusal the session hears of (asyncssh's would ask the
    # connection for an X11 listener, which it refuses: x11_forwarding=False).
    packet.get_boolean()  # single connection
    packet.get_string()  # authentication protocol
    packet.get_string()  # authentication cookie
    screen = packet.get_uint32()
    packet.check_end()
    refused = getattr(self._session, "x11_refused", None)
    if refused is not None:
        refused(screen)
    return False


def apply() -> None:
    """Install the checks for every channel from now on (idempotent). The gateway calls it at
    start (``serve``, ``demo``); importing this module changes nothing."""
    SSHChannel._accept_data = _checked_accept_data  # type: ignore[method-assign]
    SSHChannel._packet_handlers[MSG_CHANNEL_WINDOW_ADJUST] = _checked_window_adjust
    SSHServerChannel._process_env_request = _checked_env_request  # type: ignore[method-assign]
    SSHServerChannel._process_x11_req_request = _refused_x11_request  # type: ignore[method-assign]
