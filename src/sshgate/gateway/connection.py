"""One client SSH connection: authenticate the login, route and bind its channels, relay them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

import asyncssh

from sshgate import audit
from sshgate.command import USAGE, CommandError, ListResources, Route, SshConfig, parse_command
from sshgate.config import SshResource
from sshgate.gateway.binding import (
    BindContext,
    Binding,
    choose_native,
    decide_session,
    find_resource,
    plan_upstream,
    start_recording,
)
from sshgate.gateway.directory import list_output, ssh_config_output
from sshgate.gateway.lockout import FailureTracker
from sshgate.gateway.notices import Notices
from sshgate.gateway.refusal import Refusal
from sshgate.gateway.relay import ChannelRelay, start_task
from sshgate.gateway.sftp_gate import SftpGate
from sshgate.identity import Credentials, Identity, lookup
from sshgate.login import Login, LoginError, parse_login
from sshgate.metrics import Metrics
from sshgate.policy.decision import Decision
from sshgate.policy.input import ConnectionFacts, PolicyRequestKind, RequestFacts, request_input
from sshgate.recording.recorder import ChannelKind
from sshgate.sftp.protocol import Mutation
from sshgate.sftp.tracker import SftpTracker
from sshgate.tokens import verify_token
from sshgate.upstream.base import SessionRequest, UpstreamChannel, UpstreamError

_FORWARDED_ENV = ("LANG", "LANGUAGE", "TZ")


class GatewayState:
    """Process-wide state shared by connections: counters and the lockout table."""

    def __init__(self, tracker: FailureTracker, metrics: Metrics) -> None:
        self.tracker = tracker
        self.metrics = metrics
        self.unauthenticated = 0
        self.connections: set[GatewayConnection] = set()
        self.bound_per_identity: Counter[str] = Counter()
        self.unbinding: set[asyncio.Task[None]] = set()


class GatewayConnection(asyncssh.SSHServer):
    def __init__(self, ctx: BindContext, state: GatewayState) -> None:
        self.ctx = ctx
        self.state = state
        self.session_id = uuid.uuid4().hex
        self.log = audit.logger(session_id=self.session_id)
        self.conn: asyncssh.SSHServerConnection | None = None
        self.client_ip = ""
        self.login: Login | None = None
        self.identity: Identity | None = None
        self.credentials = Credentials()
        self.auth_method = ""
        self.authenticated = False
        self._counted_unauth = False
        self._over_unauth_cap = False
        self._tried = False
        self._last_method = "publickey"
        self._binding: asyncio.Task[Binding] | None = None
        self._counted_binding = False
        self.started = time.monotonic()
        self.channels: set[ChannelRelay] = set()
        self.notices = Notices()
        self._last_bytes = 0
        self.last_activity = self.started

    # Connection lifecycle

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        self.state.connections.add(self)
        # Over the cap, the connection is refused once key exchange is done (in begin_auth), so
        # the client can read why instead of seeing a bare reset.
        self._over_unauth_cap = self.state.unauthenticated >= self.ctx.config.limits.max_unauthenticated
        self.state.unauthenticated += 1
        self._counted_unauth = True

    def _leave_unauthenticated(self) -> None:
        if self._counted_unauth:
            self._counted_unauth = False
            self.state.unauthenticated -= 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave_unauthenticated()
        self.state.connections.discard(self)
        if not self.authenticated and self._tried:
            self.state.metrics.auth_attempt(self._last_method, "failure")
        if not self.authenticated and self._tried and self.state.tracker.failure(self.client_ip):
            self.log.warning("auth.lockout", client_ip=self.client_ip, lockout_s=self.state.tracker.lockout_s)
        if self._binding is not None:
            task = asyncio.get_running_loop().create_task(self._unbind())
            self.state.unbinding.add(task)
            task.add_done_callback(self.state.unbinding.discard)
        if self._counted_binding:
            assert self.identity is not None
            self.state.bound_per_identity[self.identity.name] -= 1
        if self.authenticated:
            self.log.info(
                "session.end",
                duration_s=round(time.monotonic() - self.started, 3),
                error=str(exc) if exc else None,
            )

    async def _unbind(self) -> None:
        assert self._binding is not None
        if not self._binding.done():
            self._binding.cancel()
        try:
            binding = await self._binding
        except (asyncio.CancelledError, Exception):
            return
        self.state.metrics.session_ended(binding.resource.name, binding.resource.type, "closed")
        await binding.upstream.close()
        await binding.recording.close("closed")

    # Authentication

    def begin_auth(self, username: str) -> bool:
        if self._over_unauth_cap:
            self.log.warning(
                "connection.refused", client_ip=self.client_ip, reason="too many unauthenticated connections"
            )
            raise asyncssh.DisconnectError(
                asyncssh.DISC_TOO_MANY_CONNECTIONS, "gateway busy: too many connections are logging in"
            )
        locked = self.state.tracker.locked_for(self.client_ip)
        if locked:
            self.state.metrics.auth_attempt("publickey", "locked_out")
            self.log.warning(
                "auth.failure", client_ip=self.client_ip, reason="address locked out", method="none"
            )
            raise asyncssh.DisconnectError(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                f"too many failed logins from {self.client_ip}; try again in {int(locked) + 1} s",
            )
        try:
            self.login = parse_login(username)
        except LoginError as exc:
            self.log.warning("login.invalid", client_ip=self.client_ip, reason=str(exc), login=username[:300])
            raise asyncssh.DisconnectError(asyncssh.DISC_ILLEGAL_USER_NAME, f"invalid login: {exc}") from None
        self.identity, self.credentials = lookup(self.ctx.config, self.login)
        if self.credentials.ca_keys and self.conn is not None:
            principal = self.credentials.principal.replace('"', "")
            lines = "".join(
                f'cert-authority,principals="{principal}" {key}\n' for key in self.credentials.ca_keys
            )
            self.conn.set_authorized_keys(asyncssh.import_authorized_keys(lines))
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        self._tried = True
        wanted = key.public_data
        for line in self.credentials.authorized_keys:
            try:
                if asyncssh.import_public_key(line).public_data == wanted:
                    self.auth_method = "publickey"
                    return True
            except (asyncssh.KeyImportError, ValueError):
                continue
        return False

    async def validate_password(self, username: str, password: str) -> bool:
        self._tried = True
        self._last_method = "password"
        hashes = list(self.credentials.token_hashes)
        ok = bool(hashes) and await asyncio.get_running_loop().run_in_executor(
            None, verify_token, password, hashes
        )
        if ok:
            self.auth_method = "password"
            return True
        self.state.metrics.auth_attempt("password", "failure")
        self.log.warning("auth.failure", client_ip=self.client_ip, method="password", identity=self._who())
        if self.state.tracker.failure(self.client_ip):
            self.log.warning("auth.lockout", client_ip=self.client_ip, lockout_s=self.state.tracker.lockout_s)
            if self.conn is not None:
                self.conn.disconnect(
                    asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                    f"too many failed logins from {self.client_ip}",
                )
        return False

    def _who(self) -> str:
        return self.identity.name if self.identity else ""

    def auth_completed(self) -> None:
        self.authenticated = True
        self._leave_unauthenticated()
        self.state.tracker.success(self.client_ip)
        self.auth_method = self.auth_method or "certificate"
        self.state.metrics.auth_attempt(self.auth_method, "success")
        assert self.identity is not None and self.login is not None
        self.log.info(
            "auth.success",
            client_ip=self.client_ip,
            method=self.auth_method,
            identity=self.identity.name,
            identity_type=self.identity.type,
            client_version=self.client_version,
        )
        if self.login.resource:
            request = RequestFacts("shell")
            self._binding_for(Route(self.login.resource, self.login.native_user), request)

    @property
    def client_version(self) -> str:
        if self.conn is None:
            return ""
        return str(self.conn.get_extra_info("client_version") or "")

    # Routing and binding

    def route_for(self, route: Route | None) -> Route:
        """Merge the login's ``+resource@native`` with a ``formal`` command's route."""
        assert self.login is not None
        if route is None:
            if not self.login.resource:
                raise Refusal(USAGE, exit_status=2, event="route.missing")
            return Route(self.login.resource, self.login.native_user)
        if self.login.native_user and route.native_user and self.login.native_user != route.native_user:
            raise Refusal(
                f"native user {route.native_user} conflicts with @{self.login.native_user} in the login"
            )
        if route.native_user is None and self.login.native_user:
            return Route(
                route.resource,
                self.login.native_user,
                route.shell,
                route.container,
                route.task,
                route.command,
            )
        return route

    def _binding_for(self, route: Route, request: RequestFacts) -> asyncio.Task[Binding]:
        if self._binding is None:
            self._binding = asyncio.get_running_loop().create_task(self._bind(route, request))
            self._binding.add_done_callback(lambda t: None if t.cancelled() else t.exception())
        return self._binding

    async def binding(self, route: Route, request: RequestFacts) -> Binding:
        binding = await self._binding_for(route, request)
        if route.resource != binding.resource.name:
            raise Refusal(
                f"this connection is bound to {binding.resource.name}; open a new connection for "
                f"{route.resource}",
                event="binding.conflict",
            )
        if route.native_user and route.native_user != binding.native.user.username:
            raise Refusal(
                f"this connection logs in as {binding.native.user.username} on "
                f"{binding.resource.name}; open a new connection for {route.native_user}",
                event="binding.conflict",
            )
        return binding

    def _facts(self) -> ConnectionFacts:
        return ConnectionFacts(self.client_ip, self.client_version, self.auth_method)

    async def _bind(self, route: Route, request: RequestFacts) -> Binding:
        assert self.identity is not None
        started = time.monotonic()
        try:
            limit = self.ctx.config.limits.max_sessions_per_user
            if self.state.bound_per_identity[self.identity.name] >= limit:
                raise Refusal(
                    f"too many open sessions for {self.identity.name} (limit {limit}); close one first",
                    event="limit.sessions_per_user",
                )
            self.state.bound_per_identity[self.identity.name] += 1
            self._counted_binding = True
            resource = find_resource(self.ctx, route.resource)
            native = choose_native(resource, self.identity, route.native_user)
            plan = await plan_upstream(self.ctx, resource, native, self.identity, route, self._progress)
            decision, session_doc = await decide_session(
                self.ctx, self.identity, resource, native, self._facts(), request, plan.policy_context
            )
            self._log_decision(decision, resource=resource.name, native_user=native.user.username)
            if not decision.allowed:
                raise Refusal(decision.client_text(), reason=decision.reason, event="policy.block")
            recording = await start_recording(
                self.ctx,
                self.session_id,
                {
                    "user": self.identity.as_policy_input(),
                    "resource": resource.name,
                    "resource_type": resource.type,
                    "native_user": native.user.username,
                    "client_ip": self.client_ip,
                    "client_version": self.client_version,
                    "auth_method": self.auth_method,
                },
            )
            recording.note_decision(
                {"stage": "session", "action": decision.action, "reason": decision.reason}
            )
            self.log.info(
                "session.start",
                resource=resource.name,
                resource_type=resource.type,
                native_user=native.user.username,
                native_user_source=native.source,
                identity=self.identity.name,
                client_ip=self.client_ip,
            )
            try:
                upstream = await plan.connect()
            except Refusal as exc:
                self.log.warning(
                    "upstream.connect",
                    resource=resource.name,
                    result="error",
                    reason=exc.reason,
                    seconds=round(time.monotonic() - started, 4),
                )
                await recording.close("closed")
                raise
            if isinstance(resource, SshResource) and resource.host_key_policy.insecure_accept_any:
                self.log.warning(
                    "upstream.insecure_host_key",
                    resource=resource.name,
                    reason="host_key_policy.insecure_accept_any: the upstream host key is not checked",
                )
            seconds = time.monotonic() - started
            self.log.info(
                "upstream.connect",
                resource=resource.name,
                result="ok",
                upstream=upstream.kind,
                seconds=round(seconds, 4),
            )
            self.state.metrics.upstream_connected(resource.type, seconds)
            self.state.metrics.session_started()
            return Binding(resource, native, decision, recording, upstream, route, session_doc)
        except Refusal as exc:
            self.log.warning(
                "session.refused", resource=route.resource, reason=exc.reason, event_kind=exc.event
            )
            known = self.ctx.resource(route.resource)
            outcome = "blocked" if exc.event == "policy.block" else "refused"
            self.state.metrics.session_refused(
                route.resource if known else "", known.type if known else "", outcome
            )
            raise

    def _progress(self, text: str) -> None:
        self.log.info("session.progress", message=text)
        self.notices.send(text)

    def count_bytes(self, channel: ChannelRelay) -> None:
        self.state.metrics.transferred("to_upstream", channel.bytes_in)
        self.state.metrics.transferred("to_client", channel.bytes_out)

    def idle_for(self, now: float) -> float:
        """Seconds without a byte either way on any channel (sampled by the housekeeping tick)."""
        total = sum(c.bytes_in + c.bytes_out for c in self.channels)
        if total != self._last_bytes:
            self._last_bytes = total
            self.last_activity = now
        return now - self.last_activity

    def close_with_notice(self, message: str, event: str) -> None:
        """Tell every open session why, then close the connection (its recordings are finalized)."""
        self.log.info(event, reason=message)
        for channel in list(self.channels):
            channel.end_with_notice(message)
        if self.conn is not None:
            # Channels flush their notice as they close; the disconnect follows for any stragglers.
            conn = self.conn
            asyncio.get_running_loop().call_later(0.5, conn.disconnect, asyncssh.DISC_BY_APPLICATION, message)

    def _log_decision(self, decision: Decision, **fields: Any) -> None:
        self.state.metrics.policy_decision(decision.stage, decision.action, decision.eval_seconds)
        self.log.info(
            "policy.decision",
            stage=decision.stage,
            action=decision.action,
            reason=decision.reason,
            message=decision.message,
            eval_ms=round(decision.eval_seconds * 1000, 3),
            **fields,
        )

    async def request_decision(self, binding: Binding, kind: PolicyRequestKind, **facts: Any) -> Decision:
        """The request stage: one decision per exec, subsystem, sftp mutation or forward, audited."""
        decision = await self.ctx.policy.decide("request", request_input(binding.session_doc, kind, **facts))
        self._log_decision(decision, kind=kind, **facts)
        binding.recording.note_decision(
            {"stage": "request", "action": decision.action, "reason": decision.reason, "kind": kind, **facts}
        )
        if not decision.allowed:
            self.log.warning(
                "request.blocked", kind=kind, message=decision.message, reason=decision.reason, **facts
            )
        return decision

    async def check_request(self, binding: Binding, kind: PolicyRequestKind, **facts: Any) -> None:
        """Refuse the request when a ``request`` rule blocks it."""
        if not self.ctx.policy.has_rule("request"):
            return
        decision = await self.request_decision(binding, kind, **facts)
        if not decision.allowed:
            raise Refusal(decision.client_text(), reason=decision.reason, event="request.blocked")

    async def directory(self, command: ListResources | SshConfig) -> str:
        """``formal list`` / ``formal ssh-config``: what this identity may use, nothing bound."""
        assert self.identity is not None and self.login is not None and self.conn is not None
        if isinstance(command, ListResources):
            return await list_output(self.ctx, self.identity, self.login, self._facts(), command)
        host, port = self.conn.get_extra_info("sockname")[:2]
        key = self.conn.get_server_host_key()
        return await ssh_config_output(
            self.ctx, self.identity, self.login, self._facts(), command, (host, port), key
        )

    # Channels

    def session_requested(self) -> tuple[asyncssh.SSHServerChannel[bytes], ClientSession]:
        assert self.conn is not None
        return self.conn.create_server_channel(encoding=None), ClientSession(self)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> Any:
        return self._open_forward(dest_host, dest_port)

    async def _open_forward(self, host: str, port: int) -> ClientTcp:
        assert self.login is not None
        if not self.login.resource and self._binding is None:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                "no resource selected: log in as LOGIN+resource to forward ports",
            )
        session = ClientTcp(self, host, port)
        try:
            route = self._binding_route()
            binding = await self.binding(route, RequestFacts("port_forward", host=host, port=port))
            await self.check_request(binding, "port_forward", host=host, port=port)
            session.attach_upstream(await binding.upstream.open_tcp(host, port, session))
        except (Refusal, UpstreamError) as exc:
            self.log.warning("channel.refused", kind="forward", host=host, port=port, reason=str(exc))
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from None
        session.opened(binding)
        return session

    def _binding_route(self) -> Route:
        assert self.login is not None
        if self.login.resource:
            return Route(self.login.resource, self.login.native_user)
        assert self._binding is not None and self._binding.done()
        return self._binding.result().route


class ClientSession(ChannelRelay, asyncssh.SSHServerSession[bytes]):
    """A client session channel: shell, exec or subsystem, relayed to an upstream session."""

    def __init__(self, owner: GatewayConnection) -> None:
        super().__init__()
        self.owner = owner
        self._command: str | None = None
        self._subsystem: str | None = None
        self._term: tuple[str, tuple[int, int, int, int], Mapping[int, int]] | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan
        self.owner.channels.add(self)

    def end_with_notice(self, message: str) -> None:
        if self._chan is not None and not self._closed:
            end = "\r\n" if self._term is not None else "\n"
            self._chan.write_stderr(f"{end}sshgate: {message}{end}".encode())
        super().end_with_notice(message)

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        self._term = (term_type, term_size, term_modes)
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self._command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self._subsystem = subsystem
        return subsystem == "sftp"

    def session_started(self) -> None:
        self._task = start_task(self._start(), self._failed)

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if self._up is not None:
            self._up.resize(width, height, pixwidth, pixheight)
        self.recording.resize(width, height)

    def signal_received(self, signal: str) -> None:
        if self._up is not None:
            self._up.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.owner.channels.discard(self)
        self.owner.notices.detach(self)
        self.owner.count_bytes(self)
        self.client_gone()
        self.owner.log.info(
            "channel.close",
            kind=self._subsystem or ("exec" if self._command else "shell"),
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            exit_status=self._exit_status,
        )

    def _notice(self, line: str) -> None:
        if self._chan is not None and not self._closed:
            end = "\r\n" if self._term is not None else "\n"
            self._chan.write_stderr(f"{line}{end}".encode())

    def _refuse(self, message: str, exit_status: int) -> None:
        chan = self._chan
        if chan is None or self._closed:
            return
        self._closed = True
        text = message.rstrip("\n") + "\n"
        if self._term is not None:
            text = text.replace("\n", "\r\n")
        chan.write_stderr(("sshgate: " + text).encode() if exit_status != 2 else text.encode())
        chan.exit(exit_status)

    def _failed(self, exc: BaseException) -> None:
        self.owner.log.error("channel.error", error=repr(exc))
        self._refuse("internal error; the gateway's audit log has the details", 1)

    async def _start(self) -> None:
        owner = self.owner
        try:
            parsed = parse_command(self._command) if self._command is not None else None
        except CommandError as exc:
            self._refuse(str(exc), 2)
            return
        if isinstance(parsed, ListResources | SshConfig):
            assert self._chan is not None
            self._chan.write((await owner.directory(parsed)).encode())
            owner.log.info("directory.listed", command=self._command)
            self._chan.exit(0)
            self._closed = True
            return
        try:
            route = owner.route_for(parsed)
        except Refusal as exc:
            self._refuse(str(exc), exc.exit_status)
            return
        owner.notices.attach(self, self._notice)
        command = route.command if parsed is not None else self._command
        kind: Literal["shell", "exec", "subsystem"] = "exec" if command is not None else "shell"
        if self._subsystem is not None:
            kind, command = "subsystem", None
        facts = RequestFacts(kind, command, self._subsystem, self._term is not None)
        try:
            binding = await owner.binding(route, facts)
            if kind != "shell":
                await owner.check_request(binding, kind, command=command, subsystem=self._subsystem)
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
        except (Refusal, UpstreamError) as exc:
            self._refuse(str(exc), getattr(exc, "exit_status", 1))
            return
        channel_kind: ChannelKind = "sftp" if kind == "subsystem" else kind
        self.recording = binding.recording.open_channel(
            channel_kind,
            {
                "command": command,
                "subsystem": request.subsystem,
                "pty": request.pty,
                "term": request.term_type,
                "size": list(request.term_size[:2]) if request.term_size else None,
            },
        )
        owner.log.info(
            "channel.open",
            kind=request.kind,
            command=command,
            subsystem=request.subsystem,
            pty=request.pty,
            resource=binding.resource.name,
        )
        if request.subsystem == "sftp":
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
        """Record every sftp file operation; with a ``request`` rule, also gate the mutating ones."""
        tracker = SftpTracker(emit=self.recording.event)
        self.server_tap = tracker.server_data
        self.on_close = tracker.close
        if not self.owner.ctx.policy.has_rule("request"):

            def observe(data: bytes) -> None:
                up.write(data)
                tracker.client_data(data)

            self.client_filter = observe
            return
        chan = self._chan
        assert chan is not None

        async def decide(change: Mutation) -> Decision:
            return await self.owner.request_decision(
                binding, "sftp", operation=change.operation, path=change.path, target_path=change.target
            )

        gate = SftpGate(tracker, up.write, chan.write, decide, chan.pause_reading, chan.resume_reading,
                        lambda reason: self._refuse(reason, 1))  # fmt: skip
        self.client_filter = gate.feed


def _forwarded_env(env: Any) -> dict[str, str]:
    return {k: v for k, v in dict(env).items() if k in _FORWARDED_ENV or k.startswith("LC_")}


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
        self.owner.channels.discard(self)
        self.owner.count_bytes(self)
        self.client_gone()
        self.owner.log.info(
            "channel.close",
            kind="forward",
            host=self.host,
            port=self.port,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
        )
