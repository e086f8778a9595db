"""Authenticating one connection: its login, the methods that may prove it, and the limits.

Every attempt passes :meth:`Authenticator.begin_attempt` (lockout, ``max_auth_tries``) and every
failed one :meth:`Authenticator.failed` (audit, metric, the address's shared lockout); see the
README, "Security". Single sign-on logins sign in through keyboard-interactive, or with an
unbound key after authentication (docs/oidc.md). Nothing here knows asyncssh's server object:
the connection (gateway/connection.py) forwards its callbacks, and a test drives this directly.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn, Protocol

import asyncssh

from sshgate.config import Config
from sshgate.gateway.asyncssh_auth import OfferedKey
from sshgate.gateway.notices import PREFIX, Notices, client_text
from sshgate.gateway.signin import SignIns
from sshgate.gateway.sso import Sso
from sshgate.identity import Identity, IdentityProof, lookup
from sshgate.login import Login, LoginError, parse_login
from sshgate.metrics import Metrics
from sshgate.oidc.bindings import KeyBinding
from sshgate.oidc.device import DeviceAuthorization
from sshgate.oidc.errors import SignInError
from sshgate.oidc.signin import SignedIn, SignIn
from sshgate.policy.input import ConnectionFacts
from sshgate.refusal import Refusal
from sshgate.revoked_keys import RevokedKeysFile
from sshgate.state.base import SharedState
from sshgate.tokens import verify_token
from sshgate.user_certificates import CertificateRefused, check_user_certificate

KbdintChallenge = tuple[str, str, str, list[tuple[str, bool]]]

# How long a client has to show a failed sign-in's line before the gateway disconnects it: on a
# session channel (the line is written, then the channel closes), and as a keyboard-interactive
# challenge, which a client answers at once (then it is disconnected at once); the wait is for
# one that neither answers nor leaves, and for slow links.
_READ_LINE_S = 0.5
_ANSWER_LINE_S = 5.0


class Peer(Protocol):
    """The client's transport as authentication uses it (asyncssh's server connection)."""

    def disconnect(self, code: int, reason: str) -> None: ...
    def abort(self) -> None: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class Unauthenticated:
    """Connections of this process that have not authenticated yet, in all and per address."""

    def __init__(self) -> None:
        self.total = 0
        self.per_source: Counter[str] = Counter()

    def enter(self, address: str) -> None:
        self.total += 1
        self.per_source[address] += 1

    def leave(self, address: str) -> None:
        self.total -= 1
        self.per_source[address] -= 1
        if self.per_source[address] <= 0:
            del self.per_source[address]


class Authenticator:
    """One connection's authentication, from the TCP accept to ``auth.success`` (or its end)."""

    def __init__(
        self,
        config: Config,
        shared: SharedState,
        metrics: Metrics,
        sso: Sso | None,
        revoked_keys: RevokedKeysFile,
        slots: Unauthenticated,
        log: Any,
        on_authenticated: Callable[[], None],
    ) -> None:
        self.config = config
        self.shared = shared
        self.metrics = metrics
        self.sso = sso
        self.revoked_keys = revoked_keys
        self.slots = slots
        self.log = log
        self._on_authenticated = on_authenticated
        self.peer: Peer | None = None
        self.client_ip = ""
        self.login: Login | None = None
        self.identity: Identity | None = None
        self.proof = IdentityProof()
        self.method = ""
        self.authenticated = False
        self.attempts = 0
        self._authorized_keys: frozenset[bytes] = frozenset()
        self._ca_keys: tuple[asyncssh.SSHKey, ...] = ()
        self._audit_proof: dict[str, object] = {}
        self._counted = False
        self._over_cap = False
        self._grace: asyncio.TimerHandle | None = None
        # Single sign-on (docs/oidc.md): the sign-ins of an SSO login, where their lines go, the
        # last key offered for it (with its binding, if any), and the bound key that let it in.
        self.notices = Notices()
        self.sign_ins: SignIns | None = None
        self._may_sign_in = False
        self._offered: tuple[str, KeyBinding | None] | None = None
        self._kbdint_flow: tuple[SignIn, DeviceAuthorization] | None = None
        self._kbdint_error: SignInError | None = None
        self._disconnecting: asyncio.TimerHandle | None = None
        self._after_auth: asyncio.Task[None] | None = None
        self.sso_fingerprint: str | None = None

    # Admission and the login timer

    def admit(self, peer: Peer, client_ip: str) -> bool:
        """A new TCP connection: False drops it at once (its address holds too many logins)."""
        self.peer, self.client_ip = peer, client_ip
        limits = self.config.limits
        if self.slots.per_source[client_ip] >= limits.max_unauthenticated_per_source:
            # Dropped before the banner, as OpenSSH's PerSourceMaxStartups does: one address's idle
            # connections must not use up max_unauthenticated for everyone else.
            self.log.warning(
                "connection.dropped",
                client_ip=client_ip,
                reason="too many unauthenticated connections from this address",
                limit=limits.max_unauthenticated_per_source,
            )
            return False
        # Over the total cap, the connection is refused once key exchange is done (in begin),
        # so the client can read why instead of seeing a bare reset.
        self._over_cap = self.slots.total >= limits.max_unauthenticated
        self.slots.enter(client_ip)
        self._counted = True
        self._arm_grace(limits.login_grace_s)
        return True

    def _arm_grace(self, seconds: float) -> None:
        """Close the connection if it has not authenticated within ``seconds`` (a sign-in in
        progress gets its own, longer time; asyncssh's login timer is off for that reason)."""
        if self._grace is not None:
            self._grace.cancel()
        self._grace = asyncio.get_running_loop().call_later(seconds, self._grace_expired)

    def _grace_expired(self) -> None:
        if not self.authenticated and self.peer is not None:
            self.log.info("connection.login_timeout", client_ip=self.client_ip)
            self.peer.abort()

    def _leave_unauthenticated(self) -> None:
        if self._counted:
            self._counted = False
            self.slots.leave(self.client_ip)

    def close(self) -> None:
        """The connection is gone: give back its slot, stop its timer and any sign-in."""
        self._leave_unauthenticated()
        if self._grace is not None:
            self._grace.cancel()
        if self._after_auth is not None:
            self._after_auth.cancel()
        if not self.authenticated and self.login is not None:
            self.log.info(
                "auth.abandoned", client_ip=self.client_ip, identity=self.who, attempts=self.attempts
            )

    # The login

    async def begin(self, username: str) -> None:
        """Fix the login (once) and what may prove it."""
        if self._over_cap:
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
        sso = self.sso
        if sso is not None and self.login.provider == sso.config.name:
            # An identity of the provider: only a sign-in or a key bound by one proves it.
            self.identity = Identity("human", self.login.subject, sso.config.name, None, known=False)
            self._may_sign_in = sso.may_sign_in(self.login)
            self.proof = IdentityProof(
                unusable="" if self._may_sign_in else f"this login may not sign in with {sso.config.name}"
            )
            self.sign_ins = SignIns(sso, self.log)
        else:
            self.identity, self.proof = lookup(self.config, self.login)
        self._authorized_keys = frozenset(key.public_data for key in _keys(self.proof.authorized_keys))
        self._ca_keys = tuple(_keys(self.proof.ca_keys))

    def _invalid_login(self, username: str, reason: str) -> NoReturn:
        self.log.warning("login.invalid", client_ip=self.client_ip, reason=reason, login=username[:300])
        raise asyncssh.DisconnectError(asyncssh.DISC_ILLEGAL_USER_NAME, f"invalid login: {reason}")

    @property
    def client_version(self) -> str:
        return str(self.peer.get_extra_info("client_version") or "") if self.peer is not None else ""

    @property
    def who(self) -> str:
        return self.identity.name if self.identity else ""

    def logged_in(self) -> tuple[Login, Identity]:
        """The login and identity of an authenticated connection; anything else is a bug that must
        not go on with an unknown principal."""
        if not self.authenticated or self.login is None or self.identity is None:
            raise RuntimeError("the connection is used before its authentication completed")
        return self.login, self.identity

    def facts(self) -> ConnectionFacts:
        return ConnectionFacts(self.client_ip, self.client_version, self.method)

    # Attempts: the lockout and the tries

    async def _refuse_if_locked(self, method: str) -> None:
        locked = await self.shared.locked_for(self.client_ip)
        if locked:
            self.metrics.auth_attempt(method, "locked_out")
            self.log.warning("auth.locked_out", client_ip=self.client_ip, method=method, identity=self.who)
            raise self._lockout_error(locked)

    def _lockout_error(self, locked: float) -> asyncssh.DisconnectError:
        return asyncssh.DisconnectError(
            asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
            f"too many failed logins from {self.client_ip}; try again in {int(locked) + 1} s",
        )

    async def begin_attempt(self, method: str) -> None:
        """The one place that decides whether an authentication attempt may proceed: the address
        is not locked out and this connection has tries left. An attempt counts toward
        ``max_auth_tries`` as it starts, so requests sent ahead of the answers cannot exceed it."""
        await self._refuse_if_locked(method)
        self.attempts += 1
        limit = self.config.limits.max_auth_tries
        if self.attempts > limit:
            self.metrics.auth_attempt(method, "too_many_tries")
            self.log.warning(
                "auth.max_tries", client_ip=self.client_ip, method=method, identity=self.who, limit=limit
            )
            raise asyncssh.DisconnectError(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "too many authentication attempts"
            )

    async def failed(self, method: str, reason: str, *, counted: bool = True, **fields: Any) -> bool:
        """The one place that counts a failed attempt: audit event, metric and, unless it was
        nobody's fault (``counted``), the address's lockout, shared by every worker and replica
        (docs/operations.md, "Replicas"). True when this one locked it out."""
        self.metrics.auth_attempt(method, "failure")
        self.log.warning(
            "auth.failure",
            client_ip=self.client_ip,
            method=method,
            identity=self.who,
            reason=reason,
            **fields,
        )
        limits = self.config.limits
        if counted and await self.shared.failure(
            self.client_ip, limits.auth_failures_before_lockout, limits.lockout_s
        ):
            self.log.warning("auth.lockout", client_ip=self.client_ip, lockout_s=limits.lockout_s)
            return True
        return False

    async def _refuse(self, method: str, reason: str, **fields: Any) -> bool:
        """A failed attempt; disconnects when it locked the address out."""
        if await self.failed(method, reason, **fields):
            raise self._lockout_error(self.config.limits.lockout_s)
        return False

    # Methods

    async def public_key(self, offered: OfferedKey) -> bool:
        """A ``publickey`` request (asyncssh_auth.py): an unsigned query is answered, a refused
        signed request is a failure, and a key is verified only when it would be accepted."""
        method = "certificate" if offered.certificate is not None else "publickey"
        await self.begin_attempt(method)
        fingerprint = offered.key.get_fingerprint("sha256") if offered.key is not None else None
        refusal, proof = self._judge_key(offered)
        if not offered.signed:
            if refusal is None:
                self.attempts -= 1  # as in OpenSSH, a query the key may answer is no attempt
                return True
            self.metrics.auth_attempt(method, "refused")
            return False
        if refusal is None and not offered.signature_ok():
            refusal = "the signature does not verify"
        if refusal is not None:
            return await self._refuse(method, refusal, key_fingerprint=fingerprint)
        self._audit_proof = {"key_fingerprint": fingerprint, **proof}
        if self._may_sign_in and self.sign_ins is not None and self.login is not None and fingerprint:
            # A single sign-on login: complete() lets the person the key is bound to in, or
            # signs in first with an unbound key.
            self._offered = (fingerprint, await self.sign_ins.sso.bound(fingerprint, self.login))
        else:
            self.method = method
        return True

    def _judge_key(self, offered: OfferedKey) -> tuple[str | None, dict[str, object]]:
        """Why ``offered`` does not prove this login's identity (None: it does), and what proves it."""
        if offered.key is None:
            return "not a usable key or certificate", {}
        revoked = self.revoked_keys.why(offered.key, offered.certificate)
        if revoked is not None:
            return revoked, {}
        if offered.certificate is None:
            # A single sign-on login takes any key: bound, it proves the person; unbound, it
            # leads to a sign-in.
            if offered.key.public_data in self._authorized_keys or self._may_sign_in:
                return None, {}
            return self.proof.unusable or "key not authorized for this identity", {}
        if not self._ca_keys or self.identity is None:
            return self.proof.unusable or "no user certificate authority for this identity", {}
        try:
            facts = check_user_certificate(
                offered.certificate,
                self._ca_keys,
                self.proof.principal,
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

    async def password(self, password: str) -> bool:
        await self.begin_attempt("password")
        hashes = list(self.proof.token_hashes)
        # Every login runs scrypt as often as the identity with the most tokens (tokens.verify_token).
        identities = self.config.identities
        counts = [len(u.tokens) for u in identities.users] + [len(m.tokens) for m in identities.machines]
        runs = max(counts, default=1)
        ok = await asyncio.get_running_loop().run_in_executor(None, verify_token, password, hashes, runs)
        if ok:
            # Locked out while the hash ran: the token no longer helps.
            await self._refuse_if_locked("password")
            self.method = "password"
            return True
        return await self._refuse(
            "password", self.proof.unusable or ("wrong token" if hashes else "no tokens")
        )

    @property
    def signs_in(self) -> bool:
        """An SSO login signs in through keyboard-interactive."""
        return self._may_sign_in

    async def kbdint_challenge(self) -> KbdintChallenge | bool:
        if not self._may_sign_in or self.sign_ins is None or self.login is None:
            return False
        await self.begin_attempt("oidc")
        self._arm_grace(self.sign_ins.sso.config.sign_in_timeout_s + 10)
        try:
            self._kbdint_flow = await self.sign_ins.begin(self.login.subject)
        except SignInError as exc:
            self._kbdint_flow = None
            return await self._kbdint_failed(exc)
        return "", "".join(client_text(line) for line in self._kbdint_flow[1].instruction()), "", []

    async def kbdint_response(self, responses: Sequence[str]) -> KbdintChallenge | bool:
        flow, self._kbdint_flow = self._kbdint_flow, None
        if flow is None or self.sign_ins is None:
            # The answer to a failed sign-in's line: counted as it failed; no need to wait longer.
            self._disconnect(self._kbdint_error, after=0.0)
            return False
        try:
            person = await self.sign_ins.finish(*flow)
            await self._check_not_locked_out()
        except SignInError as exc:
            return await self._kbdint_failed(exc)
        await self._signed_in(self.sign_ins.sso, person, None)
        return True

    async def _kbdint_failed(self, exc: SignInError) -> KbdintChallenge:
        """The line of a failed sign-in, shown as a challenge without prompts. The failure counts
        now: a client that hangs up instead of answering must not escape the lockout."""
        self._kbdint_error = exc
        await self._sign_in_failed(exc, _ANSWER_LINE_S)
        return "", client_text(str(exc)), "", []

    async def _check_not_locked_out(self) -> None:
        """An address locked out while its sign-in ran gets no session out of that sign-in."""
        if await self.shared.locked_for(self.client_ip):
            raise SignInError("refused", f"too many failed logins from {self.client_ip}", "locked out")

    async def _signed_in(self, sso: Sso, person: SignedIn, fingerprint: str | None) -> None:
        """Become the person the provider vouched for; bind the proven key, if there is one."""
        self.identity = Identity(
            "human", person.email, person.provider, None, person.groups, signed_in_at=person.signed_in_at
        )
        self.method = "oidc"
        if fingerprint is not None:
            binding = await sso.bind(fingerprint, person)
            self.sso_fingerprint = fingerprint
            self.log.info(
                "oidc.key_bound",
                fingerprint=fingerprint,
                identity=binding.identity,
                expires_at=int(binding.expires_at),
            )

    async def _sign_in_failed(self, exc: SignInError, read_line_s: float = _READ_LINE_S) -> None:
        """A failed sign-in is one failed attempt, counted as it fails (an unreachable provider is
        nobody's fault and is not counted); the client reads why, then is disconnected
        (docs/oidc.md)."""
        await self.failed("oidc", exc.reason, counted=exc.outcome != "unavailable")
        self._disconnect(exc, after=read_line_s)

    def _disconnect(self, exc: SignInError | None, after: float) -> None:
        """Close the connection with the failed sign-in's line ``after`` seconds from now (sooner
        replaces later), so that it holds no unauthenticated slot while nobody answers."""
        if self.peer is None:
            return
        if self._disconnecting is not None:
            self._disconnecting.cancel()
        line = PREFIX + (str(exc) if exc is not None else "sign-in failed")
        self._disconnecting = asyncio.get_running_loop().call_later(
            after, self.peer.disconnect, asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, line
        )

    # Completion

    def complete(self) -> None:
        """asyncssh accepted the login; a key nobody is bound to signs in first."""
        offered, self._offered = self._offered, None
        if not self.method and offered is not None:
            fingerprint, binding = offered
            if binding is None and self.sign_ins is not None and self.login is not None:
                # Signed with a key nobody is bound to: sign in first, still unauthenticated.
                task = asyncio.get_running_loop().create_task(
                    self._sign_in_after_auth(self.sign_ins, self.login, fingerprint)
                )
                task.add_done_callback(lambda t: None if t.cancelled() else t.exception())
                self._after_auth = task
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
                self.method = "oidc"
                self.sso_fingerprint = fingerprint
        self._authenticated()

    async def _sign_in_after_auth(self, sign_ins: SignIns, login: Login, fingerprint: str) -> None:
        """The publickey path: the URL and code go to the first session channel's stderr."""
        self._arm_grace(sign_ins.sso.config.sign_in_timeout_s + 10)
        try:
            person = await sign_ins.run(login.subject, self.notices.say)
            await self._check_not_locked_out()
        except SignInError as exc:
            # The waiting session channel prints the line; the disconnect follows.
            await self._sign_in_failed(exc)
            raise
        await self._signed_in(sign_ins.sso, person, fingerprint)
        self._authenticated()

    async def signed_in(self) -> None:
        """Wait for a sign-in after authentication, if one is running; refuse if it failed."""
        task = self._after_auth
        if task is not None and not self.authenticated:
            await asyncio.shield(task)  # a failed sign-in raises its SignInError, a Refusal

    def _authenticated(self) -> None:
        if self.login is None or self.identity is None or not self.method:
            # A bug, never a login: fail closed.
            self.log.error("auth.error", client_ip=self.client_ip, reason="authenticated without an identity")
            if self.peer is not None:
                self.peer.disconnect(asyncssh.DISC_BY_APPLICATION, "internal error")
            return
        self.authenticated = True
        if self._grace is not None:
            self._grace.cancel()
        self._leave_unauthenticated()
        self.metrics.auth_attempt(self.method, "success")
        self.log.info(
            "auth.success",
            client_ip=self.client_ip,
            method=self.method,
            identity=self.identity.name,
            identity_type=self.identity.type,
            provider=self.identity.provider,
            client_version=self.client_version,
            **self._audit_proof,
        )
        self._on_authenticated()

    # Step-up, for the binder

    async def step_up(self, resource: str) -> dict[str, Any]:
        """A session policy said ``mfa``: a fresh sign-in at the provider before it proceeds, unless
        this identity stepped up within ``mfa.max_age_s`` (docs/oidc.md). What happened, for the
        decision log and session.json."""
        _, identity = self.logged_in()
        sso = self.sso
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
        if self.sign_ins is None:
            self.sign_ins = SignIns(sso, self.log)
        self.notices.say(f"{resource} asks for a fresh sign-in")
        try:
            person = await self.sign_ins.run(email, self.notices.say, step_up=True)
        except SignInError as exc:
            self.log.warning(
                "oidc.step_up", result=exc.outcome, resource=resource, email=email, reason=exc.reason
            )
            raise Refusal(str(exc), reason=exc.reason, event="policy.mfa") from None
        at = float(person.auth_time or person.signed_in_at)
        await sso.record_step_up(provider, email, at)
        self.log.info("oidc.step_up", result="ok", resource=resource, email=email, auth_time=person.auth_time)
        return {"result": "ok", "auth_time": person.auth_time}


def _keys(lines: Iterable[str]) -> list[asyncssh.SSHKey]:
    """The configured public keys (every one parses: the configuration is refused otherwise)."""
    return [asyncssh.import_public_key(line) for line in lines]
