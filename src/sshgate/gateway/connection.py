"""One client SSH connection: authenticate the login, route and bind its channels, relay them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, NoReturn

import asyncssh

from sshgate import audit
from sshgate.command import USAGE, CommandError, ListResources, Route, SshConfig, parse_command
from sshgate.config import SshResource
from sshgate.gateway import asyncssh_auth
from sshgate.gateway.asyncssh_auth import OfferedKey
from sshgate.gateway.binding import (
    BindContext,
    Binding,
    Held,
    choose_native,
    decide_session,
    find_resource,
    plan_upstream,
    selection_conflict,
    start_recording,
)
from sshgate.gateway.directory import list_output, ssh_config_output
from sshgate.gateway.live import LiveOutput
from sshgate.gateway.refusal import Refusal
from sshgate.gateway.relay import ChannelRelay, start_task
from sshgate.gateway.sftp_gate import SftpGate
from sshgate.gateway.signin import Notices, SignIns
from sshgate.gateway.sso import Sso
from sshgate.identity import Credentials, Identity, lookup
from sshgate.login import Login, LoginError, parse_login
from sshgate.metrics import Metrics
from sshgate.oidc.bindings import KeyBinding
from sshgate.oidc.device import DeviceAuthorization
from sshgate.oidc.errors import SignInError
from sshgate.oidc.signin import SignedIn, SignIn
from sshgate.policy.decision import Decision
from sshgate.policy.input import ConnectionFacts, PolicyRequestKind, RequestFacts, request_input
from sshgate.recording.recorder import ChannelKind, EndReason
from sshgate.sftp.programs import is_sftp_server
from sshgate.sftp.protocol import Mutation, Request
from sshgate.sftp.tracker import SftpTracker
from sshgate.state.base import LiveSession, SharedState
from sshgate.tokens import verify_token
from sshgate.upstream.base import SessionRequest, UpstreamChannel, UpstreamError
from sshgate.user_certificates import CertificateRefused, check_user_certificate

_FORWARDED_ENV = ("LANG", "LANGUAGE", "TZ")

asyncssh_auth.install()


class GatewayState:
    """Process-wide state shared by connections; what other processes and replicas must agree
    on (lockouts, session counts, bindings) lives behind ``shared`` (sshgate.state)."""

    def __init__(self, shared: SharedState, metrics: Metrics) -> None:
        self.shared = shared
        self.metrics = metrics
        self.unauthenticated = 0
        self.unauthenticated_per_source: Counter[str] = Counter()
        self.connections: set[GatewayConnection] = set()
        self.unbinding: set[asyncio.Task[None]] = set()
        self.sso: Sso | None = None

    def revoked(self, fingerprints: set[str]) -> None:
        """Close the connections that authenticated with a key whose sign-in was just revoked."""
        for conn in list(self.connections):
            if conn.sso_fingerprint in fingerprints:
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
        self.client_ip = ""
        self.login: Login | None = None
        self.identity: Identity | None = None
        self.credentials = Credentials()
        self.auth_method = ""
        self.authenticated = False
        self._authorized_keys: frozenset[bytes] = frozenset()
        self._ca_keys: tuple[asyncssh.SSHKey, ...] = ()
        self._attempts = 0
        self._proof: dict[str, object] = {}
        self._counted_unauth = False
        self._over_unauth_cap = False
        self._binding: asyncio.Task[Binding] | None = None
        self._held = Held()
        self._live: LiveSession | None = None
        self.started = time.monotonic()
        self.channels: set[ChannelRelay] = set()
        self._last_bytes = 0
        self.last_activity = self.started
        self.end_reason: EndReason | None = None  # why the gateway ended it, when it did
        self.last_closed_by_upstream = False
        # Single sign-on (docs/oidc.md): the sign-ins of an SSO login, where their lines go, the
        # last key offered for it (with its binding, if any), and the bound key that let it in.
        self.notices = Notices()
        self._sign_ins: SignIns | None = None
        self._may_sign_in = False
        self._offered: tuple[str, KeyBinding | None] | None = None
        self._kbdint_flow: tuple[SignIn, DeviceAuthorization] | None = None
        self._kbdint_error: SignInError | None = None
        self._after_auth_sign_in: asyncio.Task[None] | None = None
        self.sso_fingerprint: str | None = None
        self._grace: asyncio.TimerHandle | None = None

    # Connection lifecycle

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        limits = self.ctx.config.limits
        if self.state.unauthenticated_per_source[self.client_ip] >= limits.max_unauthenticated_per_source:
            # Dropped before the banner, as OpenSSH's PerSourceMaxStartups does: one address's idle
            # connections must not use up max_unauthenticated for everyone else.
            self.log.warning(
                "connection.dropped",
                client_ip=self.client_ip,
                reason="too many unauthenticated connections from this address",
                limit=limits.max_unauthenticated_per_source,
            )
            conn.abort()
            return
        self.state.connections.add(self)
        # Over the total cap, the connection is refused once key exchange is done (in begin_auth),
        # so the client can read why instead of seeing a bare reset.
        self._over_unauth_cap = self.state.unauthenticated >= limits.max_unauthenticated
        self.state.unauthenticated += 1
        self.state.unauthenticated_per_source[self.client_ip] += 1
        self._counted_unauth = True
        self._arm_grace(self.ctx.config.limits.login_grace_s)

    def _arm_grace(self, seconds: float) -> None:
        """Close the connection if it has not authenticated within ``seconds`` (a sign-in in
        progress gets its own, longer time; asyncssh's login timer is off for that reason)."""
        if self._grace is not None:
            self._grace.cancel()
        self._grace = asyncio.get_running_loop().call_later(seconds, self._grace_expired)

    def _grace_expired(self) -> None:
        if not self.authenticated and self.conn is not None:
            self.log.info("connection.login_timeout", client_ip=self.client_ip)
            self.conn.abort()

    def _leave_unauthenticated(self) -> None:
        if self._counted_unauth:
            self._counted_unauth = False
            self.state.unauthenticated -= 1
            per_source = self.state.unauthenticated_per_source
            per_source[self.client_ip] -= 1
            if per_source[self.client_ip] <= 0:
                del per_source[self.client_ip]

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, asyncssh.IllegalUserName):
            # asyncssh refuses a name it cannot decode, or of 1024 bytes or more, before begin_auth.
            self.log.warning("login.invalid", client_ip=self.client_ip, reason=exc.reason)
        self._leave_unauthenticated()
        if self._grace is not None:
            self._grace.cancel()
        if self._after_auth_sign_in is not None:
            self._after_auth_sign_in.cancel()
        self.state.connections.discard(self)
        if self._binding is not None:
            task = asyncio.get_running_loop().create_task(self._unbind(self._binding))
            self.state.unbinding.add(task)
            task.add_done_callback(self.state.unbinding.discard)
        if self.authenticated:
            self.log.info(
                "session.end",
                duration_s=round(time.monotonic() - self.started, 3),
                error=str(exc) if exc else None,
            )
        elif self.login is not None:
            self.log.info(
                "auth.abandoned", client_ip=self.client_ip, identity=self._who(), attempts=self._attempts
            )

    async def _unbind(self, binding: asyncio.Task[Binding]) -> None:
        """The client is gone: stop a setup in progress and release what the binding holds. The
        session counts against the user's cap until its upstream and recording are released."""
        try:
            binding.cancel()
            await asyncio.wait([binding])
            if binding.cancelled():
                await self._held.release("aborted", "client")
            elif binding.exception() is not None:
                await self._held.release("closed", "error")
            else:
                bound = binding.result()
                self.state.metrics.session_ended(bound.resource.name, bound.resource.type, "closed")
                reason = self.end_reason or ("upstream" if self.last_closed_by_upstream else "client")
                await self._held.release("closed", reason)
        finally:
            if self._live is not None:
                await self.state.shared.close_session(self._live)

    # Authentication: begin_auth fixes the login; every attempt passes _begin_attempt and every
    # failed one _failed (README, "Security"; single sign-on: docs/oidc.md).

    async def begin_auth(self, username: str) -> bool:
        if self._over_unauth_cap:
            self.log.warning(
                "connection.refused", client_ip=self.client_ip, reason="too many unauthenticated connections"
            )
            raise asyncssh.DisconnectError(
                asyncssh.DISC_TOO_MANY_CONNECTIONS, "gateway busy: too many connections are logging in"
            )
        await self._refuse_if_locked("none")
        if self.login is not None:
            # As OpenSSH: one connection authenticates one login.
            self._invalid_login(username, "the login changed during authentication")
        try:
            self.login = parse_login(username)
        except LoginError as exc:
            self._invalid_login(username, str(exc))
        sso = self.state.sso
        if sso is not None and self.login.provider == sso.config.name:
            # An identity of the provider: only a sign-in or a key bound by one proves it.
            self.identity = Identity("human", self.login.subject, sso.config.name, None, known=False)
            self._may_sign_in = sso.may_sign_in(self.login)
            self.credentials = Credentials(
                unusable="" if self._may_sign_in else f"this login may not sign in with {sso.config.name}"
            )
            self._sign_ins = SignIns(sso, self.log)
        else:
            self.identity, self.credentials = lookup(self.ctx.config, self.login)
        self._authorized_keys = frozenset(_public_data(self.credentials.authorized_keys))
        self._ca_keys = tuple(_keys(self.credentials.ca_keys))
        return True

    def _invalid_login(self, username: str, reason: str) -> NoReturn:
        self.log.warning("login.invalid", client_ip=self.client_ip, reason=reason, login=username[:300])
        raise asyncssh.DisconnectError(asyncssh.DISC_ILLEGAL_USER_NAME, f"invalid login: {reason}")

    async def _refuse_if_locked(self, method: str) -> None:
        locked = await self.state.shared.locked_for(self.client_ip)
        if locked:
            self.state.metrics.auth_attempt(method, "locked_out")
            self.log.warning("auth.locked_out", client_ip=self.client_ip, method=method, identity=self._who())
            raise self._lockout_error(locked)

    def _lockout_error(self, locked: float) -> asyncssh.DisconnectError:
        return asyncssh.DisconnectError(
            asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
            f"too many failed logins from {self.client_ip}; try again in {int(locked) + 1} s",
        )

    async def _begin_attempt(self, method: str) -> None:
        """The one place that decides whether an authentication attempt may proceed: the address
        is not locked out and this connection has tries left. An attempt counts toward
        ``max_auth_tries`` as it starts, so requests sent ahead of the answers cannot exceed it."""
        await self._refuse_if_locked(method)
        self._attempts += 1
        limit = self.ctx.config.limits.max_auth_tries
        if self._attempts > limit:
            self.state.metrics.auth_attempt(method, "too_many_tries")
            self.log.warning(
                "auth.max_tries", client_ip=self.client_ip, method=method, identity=self._who(), limit=limit
            )
            raise asyncssh.DisconnectError(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "too many authentication attempts"
            )

    async def _failed(self, method: str, reason: str, *, counted: bool = True, **fields: Any) -> bool:
        """The one place that counts a failed attempt: audit event, metric and, unless it was
        nobody's fault (``counted``), the address's lockout, shared by every worker and replica
        (docs/operations.md, "Replicas"). True when this one locked it out."""
        self.state.metrics.auth_attempt(method, "failure")
        self.log.warning(
            "auth.failure",
            client_ip=self.client_ip,
            method=method,
            identity=self._who(),
            reason=reason,
            **fields,
        )
        limits = self.ctx.config.limits
        if counted and await self.state.shared.failure(
            self.client_ip, limits.auth_failures_before_lockout, limits.lockout_s
        ):
            self.log.warning("auth.lockout", client_ip=self.client_ip, lockout_s=limits.lockout_s)
            return True
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    async def public_key_attempt(self, offered: OfferedKey) -> bool:
        """A ``publickey`` request (asyncssh_auth.py): an unsigned query is answered, a refused
        signed request is a failure, and a key is verified only when it would be accepted."""
        method = "certificate" if offered.certificate is not None else "publickey"
        await self._begin_attempt(method)
        fingerprint = offered.key.get_fingerprint("sha256") if offered.key is not None else None
        refusal, proof = self._judge_key(offered)
        if not offered.signed:
            if refusal is None:
                self._attempts -= 1  # as in OpenSSH, a query the key may answer is no attempt
                return True
            self.state.metrics.auth_attempt(method, "refused")
            return False
        if refusal is None and not offered.signature_ok():
            refusal = "the signature does not verify"
        if refusal is not None:
            if await self._failed(method, refusal, key_fingerprint=fingerprint):
                raise self._lockout_error(self.ctx.config.limits.lockout_s)
            return False
        self._proof = {"key_fingerprint": fingerprint, **proof}
        if self._may_sign_in and self._sign_ins is not None and self.login is not None and fingerprint:
            # A single sign-on login: auth_completed lets the person the key is bound to in, or
            # signs in first with an unbound key.
            self._offered = (fingerprint, await self._sign_ins.sso.bound(fingerprint, self.login))
        else:
            self.auth_method = method
        return True

    def _judge_key(self, offered: OfferedKey) -> tuple[str | None, dict[str, object]]:
        """Why ``offered`` does not prove this login's identity (None: it does), and what proves it."""
        if offered.key is None:
            return "not a usable key or certificate", {}
        if offered.certificate is None:
            # A single sign-on login takes any key: bound, it proves the person; unbound, it
            # leads to a sign-in.
            if offered.key.public_data in self._authorized_keys or self._may_sign_in:
                return None, {}
            return self.credentials.unusable or "key not authorized for this identity", {}
        if not self._ca_keys or self.identity is None:
            return self.credentials.unusable or "no user certificate authority for this identity", {}
        try:
            facts = check_user_certificate(
                offered.certificate,
                self._ca_keys,
                self.credentials.principal,
                ignore_case=self.identity.type == "human",
                client_ip=self.client_ip,
            )
        except CertificateRefused as exc:
            return f"certificate refused: {exc}", {}
        return None, {
            "cert_key_id": facts.key_id,
            "cert_serial": facts.serial,
            "cert_ca_fingerprint": facts.ca_fingerprint,
            "cert_principal": facts.principal,
        }

    def kbdint_auth_supported(self) -> bool:
        """An SSO login signs in through keyboard-interactive; other logins keep asyncssh's
        default (keyboard-interactive prompts for the password)."""
        return True if self._may_sign_in else NotImplemented

    async def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> tuple[str, str, str, list[tuple[str, bool]]] | bool:
        if not self._may_sign_in or self._sign_ins is None or self.login is None:
            return False
        await self._begin_attempt("oidc")
        self._arm_grace(self._sign_ins.sso.config.sign_in_timeout_s + 10)
        try:
            self._kbdint_flow = await self._sign_ins.begin(self.login.subject)
        except SignInError as exc:
            self._kbdint_flow = None
            self._kbdint_error = exc
            return "", f"sshgate: {exc}\n", "", []
        lines = "".join(f"sshgate: {line}\n" for line in self._kbdint_flow[1].instruction())
        return "", lines, "", []

    async def validate_kbdint_response(
        self, username: str, responses: Sequence[str]
    ) -> tuple[str, str, str, list[tuple[str, bool]]] | bool:
        flow, self._kbdint_flow = self._kbdint_flow, None
        if flow is None or self._sign_ins is None:
            await self._sign_in_failed(self._kbdint_error, disconnect_after=0.0)
            return False
        try:
            person = await self._sign_ins.finish(*flow)
            await self._check_not_locked_out()
        except SignInError as exc:
            self._kbdint_error = exc
            return "", f"sshgate: {exc}\n", "", []  # shown to the person; the next answer fails
        await self._signed_in(self._sign_ins.sso, person, None)
        return True

    async def _check_not_locked_out(self) -> None:
        """An address locked out while its sign-in ran gets no session out of that sign-in."""
        if await self.state.shared.locked_for(self.client_ip):
            raise SignInError("refused", f"too many failed logins from {self.client_ip}", "locked out")

    async def _signed_in(self, sso: Sso, person: SignedIn, fingerprint: str | None) -> None:
        """Become the person the provider vouched for; bind the proven key, if there is one."""
        self.identity = Identity(
            "human", person.email, person.provider, None, person.groups, signed_in_at=person.signed_in_at
        )
        self.auth_method = "oidc"
        if fingerprint is not None:
            binding = await sso.bind(fingerprint, person)
            self.sso_fingerprint = fingerprint
            self.log.info(
                "oidc.key_bound",
                fingerprint=fingerprint,
                identity=binding.identity,
                expires_at=int(binding.expires_at),
            )

    async def _sign_in_failed(self, exc: SignInError | None, disconnect_after: float) -> None:
        """A failed sign-in is one failed attempt (an unreachable provider is nobody's fault and
        is not counted); the client is told why, then disconnected."""
        line = f"sshgate: {exc}" if exc is not None else "sshgate: sign-in failed"
        counted = exc is None or exc.outcome != "unavailable"
        await self._failed("oidc", exc.reason if exc else "no sign-in in progress", counted=counted)
        if self.conn is not None:
            conn = self.conn
            asyncio.get_running_loop().call_later(
                disconnect_after, conn.disconnect, asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, line
            )

    async def validate_password(self, username: str, password: str) -> bool:
        await self._begin_attempt("password")
        hashes = list(self.credentials.token_hashes)
        # A login without tokens runs scrypt too (tokens.verify_token): same time either way.
        ok = await asyncio.get_running_loop().run_in_executor(None, verify_token, password, hashes)
        if ok:
            # Locked out while the hash ran: the token no longer helps.
            await self._refuse_if_locked("password")
            self.auth_method = "password"
            return True
        reason = self.credentials.unusable or ("wrong token" if hashes else "no tokens")
        if await self._failed("password", reason):
            raise self._lockout_error(self.ctx.config.limits.lockout_s)
        return False

    def _who(self) -> str:
        return self.identity.name if self.identity else ""

    def _logged_in(self) -> tuple[Login, Identity]:
        """The login and identity of an authenticated connection; anything else is a bug that must
        not go on with an unknown principal."""
        if not self.authenticated or self.login is None or self.identity is None:
            raise RuntimeError("the connection is used before its authentication completed")
        return self.login, self.identity

    def auth_completed(self) -> None:
        offered, self._offered = self._offered, None
        if not self.auth_method and offered is not None:
            fingerprint, binding = offered
            if binding is None and self._sign_ins is not None and self.login is not None:
                # Signed with a key nobody is bound to: sign in first, still unauthenticated.
                task = asyncio.get_running_loop().create_task(
                    self._sign_in_after_auth(self._sign_ins, self.login, fingerprint)
                )
                task.add_done_callback(lambda t: None if t.cancelled() else t.exception())
                self._after_auth_sign_in = task
                return
            if binding is not None:
                self.identity = Identity(
                    "human",
                    binding.email,
                    binding.provider,
                    None,
                    binding.groups,
                    signed_in_at=binding.signed_in_at,
                )
                self.auth_method = "oidc"
                self.sso_fingerprint = fingerprint
        self._authenticated()

    async def _sign_in_after_auth(self, sign_ins: SignIns, login: Login, fingerprint: str) -> None:
        """The publickey path: the URL and code go to the first session channel's stderr."""
        self._arm_grace(sign_ins.sso.config.sign_in_timeout_s + 10)
        try:
            flow, authorization = await sign_ins.begin(login.subject)
            for line in authorization.instruction():
                self.notices.say(line)
            person = await sign_ins.finish(flow, authorization)
            await self._check_not_locked_out()
        except SignInError as exc:
            # The waiting session channel prints the line; the disconnect follows.
            await self._sign_in_failed(exc, disconnect_after=0.5)
            raise
        await self._signed_in(sign_ins.sso, person, fingerprint)
        self._authenticated()

    async def signed_in(self) -> None:
        """Wait for a sign-in after authentication, if one is running; refuse if it failed."""
        task = self._after_auth_sign_in
        if task is None or self.authenticated:
            return
        try:
            await asyncio.shield(task)
        except SignInError as exc:
            raise Refusal(str(exc), reason=exc.reason, event="oidc.sign_in") from None

    def _authenticated(self) -> None:
        if self.login is None or self.identity is None or not self.auth_method:
            # A bug, never a login: fail closed.
            self.log.error("auth.error", client_ip=self.client_ip, reason="authenticated without an identity")
            if self.conn is not None:
                self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, "internal error")
            return
        self.authenticated = True
        if self._grace is not None:
            self._grace.cancel()
        self._leave_unauthenticated()
        self.state.metrics.auth_attempt(self.auth_method, "success")
        self.log.info(
            "auth.success",
            client_ip=self.client_ip,
            method=self.auth_method,
            identity=self.identity.name,
            identity_type=self.identity.type,
            provider=self.identity.provider,
            client_version=self.client_version,
            **self._proof,
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
        login, _ = self._logged_in()
        if route is None:
            if not login.resource:
                raise Refusal(USAGE, exit_status=2, event="route.missing")
            return Route(login.resource, login.native_user)
        if login.native_user and route.native_user and login.native_user != route.native_user:
            raise Refusal(f"native user {route.native_user} conflicts with @{login.native_user} in the login")
        if route.native_user is None and login.native_user:
            return Route(
                route.resource,
                login.native_user,
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
        if conflict := selection_conflict(binding.resource, binding.session_doc.get("ecs"), route):
            raise Refusal(conflict, event="binding.conflict")
        return binding

    def _facts(self) -> ConnectionFacts:
        return ConnectionFacts(self.client_ip, self.client_version, self.auth_method)

    async def _bind(self, route: Route, request: RequestFacts) -> Binding:
        _, identity = self._logged_in()
        started = time.monotonic()
        try:
            limit = self.ctx.config.limits.max_sessions_per_user
            # Registered before the answer: a connection lost meanwhile still unregisters it.
            self._live = LiveSession(
                self.session_id, self.state.shared.replica, identity.name, route.resource, time.time()
            )
            if not await self.state.shared.open_session(self._live, limit):
                self._live = None
                raise Refusal(
                    f"too many open sessions for {identity.name} (limit {limit}); close one first",
                    event="limit.sessions_per_user",
                )
            resource = find_resource(self.ctx, route.resource)
            native = choose_native(resource, identity, route.native_user)
            plan = await plan_upstream(self.ctx, resource, native, identity, route, self._progress)
            decision, session_doc = await decide_session(
                self.ctx, identity, resource, native, self._facts(), request, plan.policy_context
            )
            self._log_decision(decision, resource=resource.name, native_user=native.user.username)
            step_up: dict[str, Any] | None = None
            if decision.action == "mfa":
                step_up = await self._step_up(resource.name)
            elif not decision.allowed:
                raise Refusal(decision.client_text(), reason=decision.reason, event="policy.block")
            recording = await self._held.recording_from(
                start_recording(
                    self.ctx,
                    self.session_id,
                    {
                        "user": identity.as_policy_input(),
                        "resource": resource.name,
                        "resource_type": resource.type,
                        "native_user": native.user.username,
                        "client_ip": self.client_ip,
                        "client_version": self.client_version,
                        "auth_method": self.auth_method,
                    },
                )
            )
            recording.note_decision(
                {"stage": "session", "action": decision.action, "reason": decision.reason}
                | ({"mfa": step_up} if step_up is not None else {})
            )
            self.log.info(
                "session.start",
                resource=resource.name,
                resource_type=resource.type,
                native_user=native.user.username,
                native_user_source=native.source,
                identity=identity.name,
                client_ip=self.client_ip,
            )
            try:
                upstream = await self._held.upstream_from(plan.connect())
            except Refusal as exc:
                self.log.warning(
                    "upstream.connect",
                    resource=resource.name,
                    result="error",
                    reason=exc.reason,
                    seconds=round(time.monotonic() - started, 4),
                )
                await self._held.release("closed", "refused")
                raise
            except Exception:
                await self._held.release("closed", "error")
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
        self.notices.say(text)

    async def _step_up(self, resource: str) -> dict[str, Any]:
        """A session policy said ``mfa``: a fresh sign-in at the provider before it proceeds, unless
        this identity stepped up within ``mfa.max_age_s`` (docs/oidc.md). What happened, for the
        decision log and session.json."""
        _, identity = self._logged_in()
        sso = self.state.sso
        email = identity.email
        if sso is None or email is None:
            why = "no identity provider is configured" if sso is None else "machines cannot sign in"
            self.log.warning("oidc.step_up", result="refused", resource=resource, reason=why)
            raise Refusal(f"this session needs a fresh sign-in, but {why}", reason=why, event="policy.mfa")
        provider = identity.provider
        at = await sso.fresh_step_up(provider, email)
        if at is not None:
            self.log.info(
                "oidc.step_up", result="reused", resource=resource, email=email, signed_in_at=int(at)
            )
            return {"result": "reused", "signed_in_at": int(at)}
        if self._sign_ins is None:
            self._sign_ins = SignIns(sso, self.log)
        self.notices.say(f"{resource} asks for a fresh sign-in")
        try:
            flow, authorization = await self._sign_ins.begin(email, step_up=True)
            for line in authorization.instruction():
                self.notices.say(line)
            person = await self._sign_ins.finish(flow, authorization)
        except SignInError as exc:
            self.log.warning(
                "oidc.step_up", result=exc.outcome, resource=resource, email=email, reason=exc.reason
            )
            raise Refusal(str(exc), reason=exc.reason, event="policy.mfa") from None
        at = float(person.auth_time or person.signed_in_at)
        await sso.record_step_up(provider, email, at)
        self.log.info("oidc.step_up", result="ok", resource=resource, email=email, auth_time=person.auth_time)
        return {"result": "ok", "auth_time": person.auth_time}

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

    def terminate(self, by: str) -> None:
        """An admin ended the session (docs/api.md): audited, and ``terminated_by`` in session.json."""
        if self._held.recording is not None:
            self._held.recording.note({"terminated_by": by})
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
        """The request stage: one decision per shell, exec, subsystem, sftp change or forward, audited."""
        facts = {k: v for k, v in facts.items() if v is not None}
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
        login, identity = self._logged_in()
        if isinstance(command, ListResources):
            return await list_output(self.ctx, identity, login, self._facts(), command)
        if self.conn is None:
            raise RuntimeError("ssh-config asked for without a connection")
        host, port = self.conn.get_extra_info("sockname")[:2]
        key = self.conn.get_server_host_key()
        return await ssh_config_output(self.ctx, identity, login, self._facts(), command, (host, port), key)

    # Channels

    def session_requested(self) -> tuple[asyncssh.SSHServerChannel[bytes], ClientSession]:
        if self.conn is None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "connection not set up")
        return self.conn.create_server_channel(encoding=None), ClientSession(self)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> Any:
        return self._open_forward(dest_host, dest_port)

    async def _open_forward(self, host: str, port: int) -> ClientTcp:
        try:
            await self.signed_in()  # a sign-in after authentication may still run
        except Refusal as exc:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from None
        login, _ = self._logged_in()
        if not login.resource and self._binding is None:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                "no resource selected: log in as LOGIN+resource to forward ports",
            )
        session = ClientTcp(self, host, port)
        try:
            route = await self._binding_route()
            binding = await self.binding(route, RequestFacts("port_forward", host=host, port=port))
            await self.check_request(binding, "port_forward", host=host, port=port)
            session.attach_upstream(await binding.upstream.open_tcp(host, port, session))
        except (Refusal, UpstreamError) as exc:
            self.log.warning("channel.refused", kind="forward", host=host, port=port, reason=str(exc))
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from None
        session.opened(binding)
        return session

    async def _binding_route(self) -> Route:
        """The login's route, else that of the binding a session channel started (waited for)."""
        login, _ = self._logged_in()
        if login.resource:
            return Route(login.resource, login.native_user)
        if self._binding is None:
            raise Refusal("no resource selected: log in as LOGIN+resource to forward ports")
        return (await self._binding).route


class ClientSession(ChannelRelay, asyncssh.SSHServerSession[bytes]):
    """A client session channel: shell, exec or subsystem, relayed to an upstream session."""

    def __init__(self, owner: GatewayConnection) -> None:
        super().__init__()
        self.owner = owner
        self._command: str | None = None
        self._subsystem: str | None = None
        self._term: tuple[str, tuple[int, int, int, int], Mapping[int, int]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = False

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
        self.owner.notices.attach(self._notice)
        self._task = start_task(self._start(), self._failed)

    def _notice(self, line: str) -> None:
        """A progress line (a sign-in URL and code) on stderr, never stdout (docs/oidc.md)."""
        if self._chan is not None and not self._closed:
            end = "\r\n" if self._term is not None else "\n"
            self._chan.write_stderr(f"sshgate: {line}{end}".encode())

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
        self.owner.channels.discard(self)
        self.owner.count_bytes(self)
        self.client_gone()
        self.owner.last_closed_by_upstream = self.closed_by_upstream
        self.owner.log.info(
            "channel.close",
            kind=self._subsystem or ("exec" if self._command else "shell"),
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            exit_status=self._exit_status,
            **({"upstream_error": self.upstream_error} if self.upstream_error else {}),
        )

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
            self._refuse(str(exc), 2)
            return
        if isinstance(parsed, ListResources | SshConfig):
            chan = self._channel()
            chan.write((await owner.directory(parsed)).encode())
            owner.log.info("directory.listed", command=self._command)
            chan.exit(0)
            self._closed = True
            return
        try:
            route = owner.route_for(parsed)
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
            binding = await owner.binding(route, facts)
            await owner.check_request(binding, asked, command=shown, subsystem=subsystem)
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
            owner.log.warning("channel.refused", kind=kind, reason=getattr(exc, "reason", None) or str(exc))
            self._refuse(str(exc), getattr(exc, "exit_status", 1))
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
        if channel_kind != "sftp":
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

        if not self.owner.ctx.policy.has_rule("request"):

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
            return await self.owner.request_decision(
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


def _forwarded_env(env: Any) -> dict[str, str]:
    return {k: v for k, v in dict(env).items() if k in _FORWARDED_ENV or k.startswith("LC_")}


def _keys(lines: Iterable[str]) -> Iterator[asyncssh.SSHKey]:
    """The configured public keys that parse (config validation reports the others)."""
    for line in lines:
        try:
            yield asyncssh.import_public_key(line)
        except (asyncssh.KeyImportError, ValueError):
            continue


def _public_data(lines: Iterable[str]) -> Iterator[bytes]:
    return (key.public_data for key in _keys(lines))


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
        self.owner.last_closed_by_upstream = self.closed_by_upstream
        self.owner.log.info(
            "channel.close",
            kind="forward",
            host=self.host,
            port=self.port,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            **({"upstream_error": self.upstream_error} if self.upstream_error else {}),
        )
