"""Relaying one client channel to one upstream channel, byte for byte, with flow control.

Client data that arrives before the upstream channel exists is buffered with the client
paused (asyncssh resumes reading right after ``session_started``, so the first sftp packet
would otherwise be lost); upstream data that arrives before the client channel is accepted
is buffered the same way. After that each packet costs one call in each direction.

A window change keeps its place among the client's data: asyncssh reports it at once even while
reading is paused and the data sent before it is still held, so it waits until that data has
been passed on (``client_resized``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from sshgate.gateway.live import LiveOutput
from sshgate.recording.recorder import NULL_CHANNEL, ChannelRecording
from sshgate.upstream.base import ExitSignal, UpstreamChannel

_STDERR = asyncssh.EXTENDED_DATA_STDERR
# Past this many bytes the recording has not yet taken, the upstream waits for the disk writer:
# a recording may slow a session down, but it never falls behind without bound. Measured on a
# 1 GB download (bench_relay): 8 MiB and a 20 ms recheck paused the upstream about 45 times for
# 1.2 s in all; 16 MiB (fewer, larger flushes) and a 2 ms recheck (a timer only while paused)
# took recording on/off from 0.57-0.66x to 0.77x.
RECORDING_HIGH_WATER = 16 * 1024 * 1024
_RECORDING_RECHECK_S = 0.002


class ChannelRelay:
    """Both ends of one relayed channel. Subclasses are the asyncssh session objects.

    ``client_filter`` replaces the plain upstream write for protocols the gateway follows (sftp);
    ``server_filter`` likewise takes the upstream's stdout bytes and passes on what the client
    gets with :meth:`to_client`.
    """

    _chan: Any = None
    _up: UpstreamChannel | None = None
    client_filter: Callable[[bytes], None] | None = None
    server_filter: Callable[[bytes], None] | None = None
    on_close: Callable[[], None] | None = None
    live: LiveOutput | None = None  # output for live viewers, of channels whose output is recorded

    def __init__(self) -> None:
        self._client_backlog: list[bytes] = []
        self._client_eof = False
        self._upstream_backlog: list[tuple[bytes, bool]] = []
        self._upstream_eof = False
        self._exit_status: int | None = None
        self._exit_signal: ExitSignal | None = None
        self.upstream_error: str | None = None  # why the upstream side ended abnormally (audit log)
        self._closed = False
        self.recording: ChannelRecording = NULL_CHANNEL
        self.bytes_in = 0
        self.bytes_out = 0
        self.closed_by_upstream = False  # the upstream ended it first (the recording's end_reason)
        self._client_full = False
        self._recording_full = False
        self._client_held = False  # we paused reading the client: asyncssh may hold its data
        self._pending_size: tuple[int, int, int, int] | None = None

    # Client → upstream

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.bytes_in += len(data)
        up = self._up
        if up is None:
            self._client_backlog.append(data)
            self._hold_client()
            return
        self.recording.input(data)
        if self.client_filter is None:
            up.write(data)
        else:
            self.client_filter(data)

    def eof_received(self) -> bool:
        if self._up is None:
            self._client_eof = True
        else:
            self._up.write_eof()
        return True

    def pause_writing(self) -> None:
        self._client_full = True
        if self._up is not None:
            self._up.pause_reading()

    def resume_writing(self) -> None:
        self._client_full = False
        if self._up is not None and not self._recording_full:
            self._up.resume_reading()

    def _recording_caught_up(self) -> None:
        if self._closed or self.recording.backlog() > RECORDING_HIGH_WATER // 2:
            asyncio.get_running_loop().call_later(_RECORDING_RECHECK_S, self._recording_caught_up)
            return
        self._recording_full = False
        if self._up is not None and not self._client_full:
            self._up.resume_reading()

    def attach_upstream(self, up: UpstreamChannel) -> None:
        """Connect the upstream channel and flush what the client sent meanwhile."""
        self._up = up
        for data in self._client_backlog:
            self.recording.input(data)
            if self.client_filter is None:
                up.write(data)
            else:
                self.client_filter(data)
        self._client_backlog.clear()
        if self._client_eof:
            up.write_eof()
        self._release_client()

    def client_resized(self, cols: int, rows: int, width: int, height: int) -> None:
        """A window change, passed on after every byte the client sent before it."""
        self.recording.resize(cols, rows)
        if self._up is None or self._client_held:
            self._pending_size = (cols, rows, width, height)
        else:
            self._up.resize(cols, rows, width, height)

    def _hold_client(self) -> None:
        self._client_held = True
        if self._chan is not None:
            self._chan.pause_reading()

    def _release_client(self) -> None:
        """Resume reading; asyncssh hands over the data it held at once, then a held resize follows
        (unless that data filled the upstream again)."""
        self._client_held = False
        if self._chan is not None:
            self._chan.resume_reading()
        size, up = self._pending_size, self._up
        if size is not None and up is not None and not self._client_held:
            self._pending_size = None
            up.resize(*size)

    def attach_client(self, chan: Any) -> None:
        self._chan = chan
        for data, stderr in self._upstream_backlog:
            chan.write(data, _STDERR if stderr else None)
        self._upstream_backlog.clear()
        if self._upstream_eof:
            chan.write_eof()
        if self._up is not None:
            self._up.resume_reading()

    # Upstream → client (the Downstream protocol)

    def upstream_data(self, data: bytes, stderr: bool) -> None:
        self.bytes_out += len(data)
        self.recording.output(data, stderr)
        if self.live is not None:
            self.live.output(data)
        if (
            not self._recording_full
            and self.recording.backlog() > RECORDING_HIGH_WATER
            and self._up is not None
        ):
            self._recording_full = True
            self._up.pause_reading()
            asyncio.get_running_loop().call_later(_RECORDING_RECHECK_S, self._recording_caught_up)
        if self.server_filter is not None and not stderr:
            self.server_filter(data)
        else:
            self.to_client(data, stderr)

    def to_client(self, data: bytes, stderr: bool = False) -> None:
        chan = self._chan
        if chan is None:
            self._upstream_backlog.append((data, stderr))
            if self._up is not None:
                self._up.pause_reading()
            return
        chan.write(data, _STDERR if stderr else None)

    def upstream_eof(self) -> None:
        if self._chan is None:
            self._upstream_eof = True
        else:
            self._chan.write_eof()

    def upstream_exit(self, status: int | None, signal: ExitSignal | None) -> None:
        self._exit_status = status
        self._exit_signal = signal

    def upstream_closed(self, error: str | None) -> None:
        self.upstream_error = self.upstream_error or error
        if self._closed:
            return
        self._closed = True
        self.closed_by_upstream = True
        self._finish_recording()
        chan = self._chan
        signal = self._exit_signal
        if chan is None:
            return
        if signal is not None and hasattr(chan, "exit_with_signal"):
            chan.exit_with_signal(signal.name, signal.core_dumped, signal.message)
        elif self._exit_status is not None and hasattr(chan, "exit"):
            chan.exit(self._exit_status)
        else:
            chan.close()

    def pause_reading(self) -> None:
        self._hold_client()

    def resume_reading(self) -> None:
        self._release_client()

    # Shared end of life

    def end_with_notice(self, message: str) -> None:
        """Close both ends; session channels first tell the client ``message``."""
        if self._up is not None:
            self._up.close()
        if self._chan is not None:
            self._chan.close()

    def client_gone(self) -> None:
        """The client channel closed: close upstream too."""
        if self._up is not None:
            self._up.close()
        if not self._closed:
            self._closed = True
            self._finish_recording()

    def _finish_recording(self) -> None:
        if self.on_close is not None:
            self.on_close()
        if self.live is not None:
            self.live.closed()
        signal = self._exit_signal
        self.recording.close(self._exit_status, signal.name if signal else None)


def start_task(coro: Awaitable[None], on_error: Callable[[BaseException], None]) -> asyncio.Task[None]:
    """Run ``coro`` in the background; an unexpected exception goes to ``on_error``, never lost."""

    async def runner() -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            on_error(exc)

    return asyncio.get_running_loop().create_task(runner())
