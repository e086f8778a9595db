"""One client SSH connection: the asyncssh server object, a thin adapter.

Authentication is :class:`~sshgate.gateway.authentication.Authenticator`'s, binding the
connection to a resource is :class:`~sshgate.gateway.binding.Binder`'s, and each client channel
(gateway/channels.py) asks the binder. What stays here is the connection's life: its accounting,
idle time, and closing it with a notice (a drain, a revoked sign-in, a terminate request).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any, NoReturn

import asyncssh

from sshgate import audit
from sshgate.command import ListResources, Route, SshConfig
from sshgate.gateway import asyncssh_auth
from sshgate.gateway.asyncssh_auth import OfferedKey
from sshgate.gateway.authentication import Authenticator, KbdintChallenge, Unauthenticated
from sshgate.gateway.binding import BindContext, Binder
from sshgate.gateway.channels import ClientSession, ClientTcp
from sshgate.gateway.destination import BadDestination, forward_destination
from sshgate.gateway.directory import list_output, ssh_config_output
from sshgate.gateway.notices import Notices
from sshgate.gateway.relay import ChannelRelay
from sshgate.gateway.sso import Sso
from sshgate.metrics import Metrics
from sshgate.policy.input import RequestFacts
from sshgate.recording.recorder import EndReason
from sshgate.refusal import Refusal
from sshgate.revoked_keys import RevokedKeysFile
from sshgate.state.base import SharedState

asyncssh_auth.install()

_NO_UNIX_SOCKETS = "Unix-socket forwarding is not served"


class GatewayState:
    """Process-wide state shared by connections; what other processes and replicas must agree
    on (lockouts, session counts, bindings) lives behind ``shared`` (sshgate.state)."""

    def __init__(self, shared: SharedState, metrics: Metrics) -> None:
        self.shared = shared
        self.metrics = metrics
        self.unauthenticated = Unauthenticated()
        self.connections: set[GatewayConnection] = set()
        self.unbinding: set[asyncio.Task[None]] = set()
        self.sso: Sso | None = None
        self.revoked_keys = RevokedKeysFile(None)

    def revoked(self, fingerprints: set[str]) -> None:
        """Close the connections that authenticated with a key whose sign-in was just revoked."""
        for conn in list(self.connections):
            if conn.auth.sso_fingerprint in fingerprints:
                conn.close_with_notice(
                    "your key's sign-in was revoked; sign in again", "oidc.revoked", "terminated"
                )

    def terminate(self, session_id: str, by: str) -> bool:
        """A terminate request for a session of this process (from the web app, on any replica)."""
        for conn in list(self.connections):
            if conn.session_id == session_id:
                conn.terminate(by)
                return True
        return False


class GatewayConnection(asyncssh.SSHServer):
    def __init__(self, ctx: BindContext, state: GatewayState) -> None:
        self.ctx = ctx
        self.state = state
        self.session_id = uuid.uuid4().hex
        self.log = audit.logger(session_id=self.session_id)
        self.conn: asyncssh.SSHServerConnection | None = None
        self.auth = Authenticator(
            ctx.config,
            state.shared,
            state.metrics,
            state.sso,
            state.revoked_keys,
            state.unauthenticated,
            self.log,
            self._authenticated,
        )
        self._binder: Binder | None = None
        self.started = time.monotonic()
        self.channels: set[ChannelRelay] = set()
        self._forwards_opening = 0  # forwards asked for whose upstream is not open yet
        self._last_bytes = 0
        self.last_activity = self.started
        self.end_reason: EndReason | None = None  # why the gateway ended it, when it did
        self.last_closed_by_upstream = False

    @property
    def authenticated(self) -> bool:
        return self.auth.authenticated

    @property
    def notices(self) -> Notices:
        return self.auth.notices

    # Connection lifecycle

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        if not self.auth.admit(conn, peer[0] if peer else ""):
            conn.abort()
            return
        self.state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, asyncssh.IllegalUserName):
            # asyncssh refuses a name it cannot decode, or of 1024 bytes or more, before begin_auth.
            self.log.warning("login.invalid", client_ip=self.auth.client_ip, reason=exc.reason)
        self.auth.close()
        self.state.connections.discard(self)
        if self._binder is not None:
            reason = self.end_reason or ("upstream" if self.last_closed_by_upstream else "client")
            task = asyncio.get_running_loop().create_task(self._binder.release(reason))
            self.state.unbinding.add(task)
            task.add_done_callback(self.state.unbinding.discard)
        if self.authenticated:
            self.log.info(
                "session.end",
                duration_s=round(time.monotonic() - self.started, 3),
                error=str(exc) if exc else None,
            )

    # Authentication (gateway/authentication.py)

    async def begin_auth(self, username: str) -> bool:
        await self.auth.begin(username)
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    async def public_key_attempt(self, offered: OfferedKey) -> bool:
        return await self.auth.public_key(offered)

    async def validate_password(self, username: str, password: str) -> bool:
        return await self.auth.password(password)

    def kbdint_auth_supported(self) -> bool:
        """An SSO login signs in through keyboard-interactive; other logins keep asyncssh's
        default (keyboard-interactive prompts for the password)."""
        return True if self.auth.signs_in else NotImplemented

    async def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> KbdintChallenge | bool:
        return await self.auth.kbdint_challenge()

    async def validate_kbdint_response(
        self, username: str, responses: Sequence[str]
    ) -> KbdintChallenge | bool:
        return await self.auth.kbdint_response(responses)

    def auth_completed(self) -> None:
        self.auth.complete()

    def _authenticated(self) -> None:
        """Authentication is done (perhaps after a sign-in): a login naming a resource binds now."""
        login, identity = self.auth.logged_in()
        self._binder = Binder(
            self.ctx,
            self.state.shared,
            self.state.metrics,
            self.log,
            self.session_id,
            login,
            identity,
            self.auth.facts(),
            self.auth.step_up,
            self.auth.notices.say,
        )
        if login.resource:
            self._binder.start(Route(login.resource, login.native_user), None)  # decided before any request

    async def signed_in(self) -> None:
        """Wait for a sign-in after authentication, if one is running; refuse if it failed."""
        await self.auth.signed_in()

    def binder(self) -> Binder:
        """The binder of an authenticated connection; anything else is a bug."""
        if self._binder is None:
            raise RuntimeError("the connection is used before its authentication completed")
        return self._binder

    # The connection's life

    def channel_closed(self, channel: ChannelRelay, kind: str, **fields: Any) -> None:
        """A client channel is gone: end its relay, count its bytes, audit the close."""
        self.channels.discard(channel)
        self.state.metrics.transferred("to_upstream", channel.bytes_in)
        self.state.metrics.transferred("to_client", channel.bytes_out)
        channel.client_gone()
        self.last_closed_by_upstream = channel.closed_by_upstream
        self.log.info(
            "channel.close",
            kind=kind,
            **fields,
            bytes_in=channel.bytes_in,
            bytes_out=channel.bytes_out,
            **({"upstream_error": channel.upstream_error} if channel.upstream_error else {}),
        )

    def idle_for(self, now: float) -> float:
        """Seconds without a byte either way on any channel (sampled by the housekeeping tick)."""
        total = sum(c.bytes_in + c.bytes_out for c in self.channels)
        if total != self._last_bytes:
            self._last_bytes = total
            self.last_activity = now
        return now - self.last_activity

    def terminate(self, by: str) -> None:
        """An admin ended the session (docs/api.md): audited, and ``terminated_by`` in session.json."""
        if self._binder is not None:
            self._binder.note({"terminated_by": by})
        self.close_with_notice(f"session terminated by {by}", "session.terminated", "terminated", by=by)

    def close_with_notice(self, message: str, event: str, end_reason: EndReason, **fields: str) -> None:
        """Tell every open session why, then close the connection (its recordings are finalized)."""
        self.log.info(event, reason=message, **fields)
        self.end_reason = self.end_reason or end_reason
        for channel in list(self.channels):
            channel.end_with_notice(message)
        if self.conn is not None:
            # Channels flush their notice as they close; the disconnect follows for any stragglers.
            conn = self.conn
            asyncio.get_running_loop().call_later(0.5, conn.disconnect, asyncssh.DISC_BY_APPLICATION, message)

    async def directory(self, command: ListResources | SshConfig) -> str:
        """``formal list`` / ``formal ssh-config``: what this identity may use, nothing bound."""
        login, identity = self.auth.logged_in()
        if isinstance(command, ListResources):
            return await list_output(self.ctx, identity, login, self.auth.facts(), command)
        if self.conn is None:
            raise RuntimeError("ssh-config asked for without a connection")
        host, port = self.conn.get_extra_info("sockname")[:2]
        key = self.conn.get_server_host_key()
        return await ssh_config_output(
            self.ctx, identity, login, self.auth.facts(), command, (host, port), key
        )

    # Channels (gateway/channels.py)

    def session_requested(self) -> tuple[asyncssh.SSHServerChannel[bytes], ClientSession]:
        if self.conn is None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "connection not set up")
        limit = self.ctx.config.limits.max_session_channels_per_connection
        open_now = sum(isinstance(c, ClientSession) for c in self.channels)
        self._within_channel_limit("session channels", open_now, limit, kind="session")
        return self.conn.create_server_channel(encoding=None), ClientSession(self)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> Any:
        try:
            # From here on the host is the address the resource will connect to (gateway/destination.py)
            host, port = forward_destination(dest_host, dest_port)
        except BadDestination as exc:  # no policy sees such a forward
            self.log.warning("channel.refused", kind="forward", port=dest_port, reason=exc.reason)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, exc.reason) from None
        limit = self.ctx.config.limits.max_forwards_per_connection
        open_now = self._forwards_opening + sum(isinstance(c, ClientTcp) for c in self.channels)
        self._within_channel_limit("forwards", open_now, limit, kind="forward", host=host, port=port)
        self._forwards_opening += 1  # now: a burst of opens comes before any of them runs
        return self._open_forward(host, port)

    # Requests the gateway never serves (docs/login.md, Binding): refused, and every one audited.

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        reason = "remote forwarding is not served"
        return self.request_refused("remote-forward", reason, host=listen_host, port=listen_port)

    def unix_server_requested(self, listen_path: str) -> bool:
        return self.request_refused("streamlocal-forward", _NO_UNIX_SOCKETS, path=listen_path)

    def unix_connection_requested(self, dest_path: str) -> NoReturn:
        self.request_refused("streamlocal", _NO_UNIX_SOCKETS, path=dest_path)
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, _NO_UNIX_SOCKETS)

    def request_refused(self, kind: str, reason: str, **target: Any) -> bool:
        """Audit a request refused before any policy sees it; False, the refusal asyncssh takes."""
        self.log.warning("request.blocked", kind=kind, **target, reason=reason)
        return False

    def _within_channel_limit(self, what: str, open_now: int, limit: int, **fields: Any) -> None:
        """Refuse a channel past the connection's limit: told to the client, audited."""
        if open_now < limit:
            return
        reason = f"too many {what} open on this connection (limit {limit})"
        self.log.warning("channel.refused", **fields, reason=reason)
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, reason)

    async def _open_forward(self, host: str, port: int) -> ClientTcp:
        try:
            return await self._forward(host, port)
        finally:
            self._forwards_opening -= 1  # opened (then counted in ``channels``) or refused

    async def _forward(self, host: str, port: int) -> ClientTcp:
        try:
            await self.signed_in()  # a sign-in after authentication may still run
        except Refusal as exc:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from None
        binder = self.binder()
        if not binder.selected:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                "no resource selected: log in as LOGIN+resource to forward ports",
            )
        session = ClientTcp(self, host, port)
        try:
            route = await binder.forward_route()
            binding = await binder.binding(route, RequestFacts("port_forward", host=host, port=port))
            await binder.check_request(binding, "port_forward", host=host, port=port)
            session.attach_upstream(await binding.upstream.open_tcp(host, port, session))
        except Refusal as exc:
            self.log.warning("channel.refused", kind="forward", host=host, port=port, reason=str(exc))
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from None
        session.opened(binding)
        return session
