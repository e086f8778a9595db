"""A connection's client channels: sessions (shell, exec, subsystem) and ``direct-tcpip`` forwards.

Each channel asks the connection's :class:`~sshgate.gateway.binding.Binder` for its binding and
its request decisions, then relays to an upstream channel (gateway/relay.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import asyncssh

from sshgate.command import CommandError, ListResources, SshConfig, parse_command
from sshgate.gateway.binding import Binding
from sshgate.gateway.live import LiveOutput
from sshgate.gateway.notices import client_text
from sshgate.gateway.relay import ChannelRelay, start_task
from sshgate.gateway.sftp_gate import SftpGate
from sshgate.policy.decision import Decision
from sshgate.policy.input import RequestFacts
from sshgate.recording.recorder import ChannelKind
from sshgate.refusal import Refusal
from sshgate.sftp.programs import is_sftp_server
from sshgate.sftp.protocol import Mutation, Request
from sshgate.sftp.tracker import SftpTracker
from sshgate.upstream.base import SessionRequest, UpstreamChannel

if TYPE_CHECKING:
    from sshgate.gateway.connection import GatewayConnection

_FORWARDED_ENV = ("LANG", "LANGUAGE", "TZ")
_MAX_ENV_VALUE = 256


class ClientSession(ChannelRelay, asyncssh.SSHServerSession[bytes]):
    """A client session channel: shell, exec or subsystem, relayed to an upstream session."""

    def __init__(self, owner: GatewayConnection) -> None:
        super().__init__()
        self.owner = owner
        self._command: str | None = None
        self._subsystem: str | None = None
        self._term: tuple[str, tuple[int, int, int, int], Mapping[int, int]] | None = None
        self._started = False  # shell, exec or subsystem asked for: the request the policy sees
        self._task: asyncio.Task[None] | None = None
        self._lost = False

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan
        self.owner.channels.add(self)

    def end_with_notice(self, message: str) -> None:
        if self._chan is not None and not self._closed:
            pty = self._term is not None
            self._chan.write_stderr((("\r\n" if pty else "\n") + client_text(message, pty)).encode())
        super().end_with_notice(message)

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        if self._started:  # the policy decided without one, and sshd refuses it too
            reason = "pty requested after the shell, exec or subsystem request"
        elif "\0" in term_type:  # sshd ends the whole connection over it: refused, as a pty request
            reason = "terminal type holds a NUL byte"
        else:
            self._term = (term_type, term_size, term_modes)
            return True
        self.owner.log.warning("channel.pty_refused", reason=reason)
        return False

    def shell_requested(self) -> bool:
        self._started = True
        return True

    def exec_requested(self, command: str) -> bool:
        self._started = True
        self._command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self._started = True
        self._subsystem = subsystem
        return subsystem == "sftp" or self.owner.request_refused(
            "subsystem", "only the sftp subsystem is served", subsystem=subsystem
        )

    def x11_refused(self, screen: int) -> None:
        """An ``x11-req``, which asyncssh_checks refuses and reports here."""
        self.owner.request_refused("x11", "X11 forwarding is not served", screen=screen)

    def session_started(self) -> None:
        self.owner.notices.attach(self._notice)
        self._task = start_task(self._start(), self._failed)

    def _notice(self, line: str) -> None:
        """A progress line (a sign-in URL and code) on stderr, never stdout (docs/oidc.md)."""
        if self._chan is not None and not self._closed:
            self._chan.write_stderr(client_text(line, self._term is not None).encode())

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self.client_resized(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        if self._up is not None:
            self._up.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        kind = self._subsystem or ("exec" if self._command else "shell")
        self.owner.channel_closed(self, kind, exit_status=self._exit_status)

    def _refuse(self, message: str, exit_status: int) -> None:
        chan = self._chan
        if chan is None or self._closed:
            return
        self._closed = True
        chan.write_stderr(client_text(message, self._term is not None, prefixed=exit_status != 2).encode())
        chan.exit(exit_status)

    def _channel(self) -> asyncssh.SSHServerChannel[bytes]:
        """The client channel, which asyncssh sets before the session starts (a bug otherwise:
        the session fails as an internal error instead of going on unchecked)."""
        chan: asyncssh.SSHServerChannel[bytes] | None = self._chan
        if chan is None:
            raise RuntimeError("session started without its channel")
        return chan

    def _failed(self, exc: BaseException) -> None:
        self.owner.log.error("channel.error", error=repr(exc))
        self._refuse("internal error; the gateway's audit log has the details", 1)

    async def _start(self) -> None:
        owner = self.owner
        try:
            await owner.signed_in()
        except Refusal as exc:
            self._refuse(str(exc), 1)
            return
        try:
            parsed = parse_command(self._command) if self._command is not None else None
        except CommandError as exc:
            owner.log.warning(exc.event, reason=exc.reason, exit_status=exc.exit_status)
            self._refuse(str(exc), exc.exit_status)
            return
        if isinstance(parsed, ListResources | SshConfig):
            chan = self._channel()
            chan.write((await owner.directory(parsed)).encode())
            owner.log.info("directory.listed", command=self._command)
            chan.exit(0)
            self._closed = True
            return
        binder = owner.binder()
        try:
            route = binder.route_for(parsed)
        except Refusal as exc:
            self._refuse(str(exc), exc.exit_status)
            return
        command = route.command if parsed is not None else self._command
        kind: Literal["shell", "exec", "subsystem"] = "exec" if command is not None else "shell"
        subsystem = self._subsystem
        if subsystem is not None:
            kind, command = "subsystem", None
        elif command is not None and is_sftp_server(command):
            subsystem = "sftp"  # sftp over an exec channel: gated and recorded as the subsystem
        # What policies and the recording see: ``--shell CMD`` is a command too (docs/login.md).
        shown = route.shell if kind == "shell" else command
        asked: Literal["shell", "exec", "subsystem"] = "subsystem" if subsystem else kind
        facts = RequestFacts(asked, shown, subsystem, self._term is not None)
        try:
            binding = await binder.binding(route, facts)
            await binder.check_request(binding, asked, command=shown, subsystem=subsystem)
            request = SessionRequest(
                kind=kind,
                command=command,
                subsystem=self._subsystem,
                term_type=self._term[0] if self._term else None,
                term_size=self._term[1] if self._term else None,
                term_modes=self._term[2] if self._term else {},
                env=_forwarded_env(self._chan.get_environment() if self._chan is not None else {}),
                shell=route.shell,
                container=route.container,
                task=route.task,
                agent_path=self._agent_path(binding),
            )
            up = await binding.upstream.open_session(request, self)
        except Refusal as exc:
            owner.log.warning("channel.refused", kind=kind, reason=exc.reason)
            self._refuse(str(exc), exc.exit_status)
            return
        channel_kind: ChannelKind = "sftp" if subsystem is not None else "exec" if kind == "exec" else "shell"
        self.recording = binding.recording.open_channel(
            channel_kind,
            {
                "command": shown,
                "subsystem": subsystem,
                "pty": request.pty,
                "term": request.term_type,
                "size": list(request.term_size[:2]) if request.term_size else None,
            },
        )
        if self.recording.keeps_output:  # never what the recording leaves out (scp, rsync)
            self.live = LiveOutput(owner.state.shared, owner.session_id, self.recording.n, self.recording.t0)
        owner.log.info(
            "channel.open",
            kind=request.kind,
            command=shown,
            subsystem=subsystem,
            pty=request.pty,
            resource=binding.resource.name,
        )
        if subsystem == "sftp":
            self._follow_sftp(binding, up)
        self.attach_upstream(up)

    def _agent_path(self, binding: Binding) -> str | None:
        """The client's forwarded agent if it asked for one and the resource allows it."""
        path = self._chan.get_agent_path() if self._chan is not None else None
        if path is not None and not binding.resource.allow_agent_forwarding:
            self.owner.log.info(
                "request.blocked",
                kind="agent-forwarding",
                reason="the resource does not set allow_agent_forwarding",
                resource=binding.resource.name,
            )
            return None
        return path

    def _follow_sftp(self, binding: Binding, up: UpstreamChannel) -> None:
        """Record every sftp file operation; with a ``request`` rule, also gate every request
        that can change something. A stream that can no longer be followed ends the channel:
        what it did next could be neither recorded nor gated."""
        tracker = SftpTracker(emit=self.recording.event)
        self.on_close = tracker.close

        def deliver(data: bytes) -> None:
            tracker.server_data(data)
            self.to_client(data)
            if tracker.failure:
                self._lost_track(f"sftp stream not understood: {tracker.failure}")

        binder = self.owner.binder()
        if not binder.gates_requests:

            def observe(data: bytes) -> None:
                tracker.client_data(data)
                if tracker.failure:
                    self._lost_track(f"sftp stream not understood: {tracker.failure}")
                else:
                    up.write(data)

            self.client_filter, self.server_filter = observe, deliver
            return
        chan = self._channel()

        async def decide(change: Mutation) -> Decision:
            return await binder.request_decision(
                binding, "sftp", operation=change.operation, path=change.path, target_path=change.target
            )

        def refused(request: Request, reason: str) -> None:
            self.owner.log.warning(
                "request.blocked", kind="sftp", operation=request.name, path=request.path, reason=reason
            )

        gate = SftpGate(tracker, up.write, deliver, chan.write, decide, refused, chan.pause_reading,
                        chan.resume_reading, self._lost_track)  # fmt: skip
        self.client_filter, self.server_filter = gate.feed, gate.server_data

        def closed() -> None:
            gate.close()
            tracker.close()

        self.on_close = closed

    def _lost_track(self, reason: str) -> None:
        """End a followed channel whose stream the gateway cannot follow (once)."""
        if self._lost:
            return
        self._lost = True
        self.owner.log.warning("channel.error", kind="sftp", reason=reason)
        self.end_with_notice(f"{reason}; the channel is closed")


class ClientTcp(ChannelRelay, asyncssh.SSHTCPSession[bytes]):
    """A client ``direct-tcpip`` channel relayed to a TCP stream opened from the resource."""

    def __init__(self, owner: GatewayConnection, host: str, port: int) -> None:
        super().__init__()
        self.owner = owner
        self.host = host
        self.port = port

    def opened(self, binding: Binding) -> None:
        self.recording = binding.recording.open_channel("forward", {"host": self.host, "port": self.port})
        self.owner.log.info(
            "channel.open", kind="forward", host=self.host, port=self.port, resource=binding.resource.name
        )

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.owner.channels.add(self)
        self.attach_client(chan)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.channel_closed(self, "forward", host=self.host, port=self.port)


def _forwarded_env(env: Any) -> dict[str, str]:
    """The client's locale and time zone, as OpenSSH's AcceptEnv passes them, each a short plain
    value (docs/login.md, Binding): never a control character (a NUL byte makes sshd end the
    whole connection; a newline or an escape is no locale) nor more than 256 characters."""
    return {
        k: v
        for k, v in dict(env).items()
        if (k in _FORWARDED_ENV or k.startswith("LC_")) and _plain(k) and _plain(v)
    }


def _plain(text: str) -> bool:
    return len(text) <= _MAX_ENV_VALUE and not any(c < " " or c == "\x7f" for c in text)
