"""An asyncssh client bent the way an attacker bends one: it sends what stock OpenSSH will not
(signed key requests without a query, raw user names, password requests sent ahead of the
answers) and can stop between the server's first answer and its first credential; once logged in
(``hostile_session``) it can send raw packets of its choosing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import asyncssh
import asyncssh.auth
import asyncssh.connection
from asyncssh.packet import Boolean, String

from tests.conftest import Keys
from tests.support.gateway import GatewayProcess


@dataclass
class Outcome:
    ok: bool
    error: str = ""
    # time.monotonic() of each password prompt, i.e. after the previous answer arrived
    prompts: list[float] = field(default_factory=list)
    output: str = ""


class _Client(asyncssh.SSHClient):
    def __init__(
        self,
        passwords: Sequence[str],
        keys: Sequence[asyncssh.SSHKey | tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]],
        hold: asyncio.Event | None,
        holding: asyncio.Event | None,
        ahead: int,
        switch_to: str | None,
    ) -> None:
        self.passwords = list(passwords)
        self.keys = list(keys)
        self.hold = hold
        self.holding = holding
        self.ahead = ahead
        self.switch_to = switch_to
        self.prompts: list[float] = []
        self.conn: asyncssh.SSHClientConnection | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn

    async def _wait(self) -> None:
        if self.hold is not None and self.holding is not None:
            self.holding.set()
            await self.hold.wait()
            self.hold = None

    async def password_auth_requested(self) -> str | None:
        self.prompts.append(time.monotonic())
        await self._wait()
        if not self.passwords:
            return None
        if self.switch_to is not None and self.conn is not None:
            self.conn._username = self.switch_to  # the next request names another login
        if self.ahead and self.conn is not None:
            # Requests the server has not answered yet: each one it starts is an attempt.
            auth = self.conn._auth
            for _ in range(self.ahead):
                await auth.send_request(Boolean(False), String(self.passwords[0]))
            self.ahead = 0
        return self.passwords.pop(0)

    async def public_key_auth_requested(self) -> Any:
        await self._wait()
        return [self.keys.pop(0)] if self.keys else None


async def attempt(
    port: int,
    username: str,
    *,
    passwords: Sequence[str] = (),
    keys: Sequence[asyncssh.SSHKey | tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]] = (),
    source: str = "127.0.0.1",
    hold: asyncio.Event | None = None,
    holding: asyncio.Event | None = None,
    ahead: int = 0,
    switch_to: str | None = None,
    command: str | None = None,
) -> Outcome:
    """One connection that tries ``keys`` then ``passwords``, one per request, from ``source``.
    With ``hold``, it sets ``holding`` once the server answered ``none`` and waits for ``hold``
    before offering its first credential. ``ahead`` extra password requests go out at once;
    ``switch_to`` names another login from the first password request on."""
    client = _Client(passwords, keys, hold, holding, ahead, switch_to)
    methods = ",".join(m for m, want in (("publickey", keys), ("password", passwords)) if want)
    try:
        conn, _ = await asyncio.wait_for(
            asyncssh.create_connection(
                lambda: client,
                "127.0.0.1",
                port,
                local_addr=(source, 0),
                username=username,
                known_hosts=None,
                client_keys=None,
                agent_path=None,
                config=None,
                preferred_auth=methods or "none",
                kbdint_auth=False,
            ),
            60,
        )
    except (asyncssh.Error, OSError) as exc:
        return Outcome(False, getattr(exc, "reason", None) or str(exc), client.prompts)
    async with conn:
        output = ""
        if command is not None:
            output = str((await conn.run(command, check=False, timeout=30)).stdout)
    return Outcome(True, "", client.prompts, output)


async def _signed_at_once(self: Any) -> None:
    self._keypair = await self._conn.public_key_auth_requested()
    if self._keypair is None:
        self._conn.try_next_auth(next_method=True)
        return
    await self._send_signed_request()


@contextlib.contextmanager
def signing_without_query() -> Iterator[None]:
    """Key requests go out signed straight away, as OpenSSH never sends them."""
    with mock.patch.object(asyncssh.auth._ClientPublicKeyAuth, "_start", _signed_at_once):
        yield


def _as_sent(s: str) -> str:
    return s


@contextlib.contextmanager
def names_as_sent() -> Iterator[None]:
    """User names go out as given: no SASLprep, so control characters and NUL reach the server."""
    with mock.patch.object(asyncssh.connection, "saslprep", _as_sent):
        yield


LOGIN = "alice+web-1"
# AES-GCM and chacha20-poly1305 take ssh_packet_path's lean receive path; aes128-ctr
# (encrypt-then-MAC, so the length is in the clear as under GCM) takes asyncssh's own.
CIPHERS = [
    ("aes128-gcm@openssh.com", "hmac-sha2-256-etm@openssh.com"),
    ("aes128-ctr", "hmac-sha2-256-etm@openssh.com"),
    ("chacha20-poly1305@openssh.com", "hmac-sha2-256-etm@openssh.com"),
]


class Hostile(asyncssh.SSHClient):
    def __init__(self) -> None:
        self.lost: Exception | None = None
        self.gone = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc
        self.gone.set()


async def hostile_session(gateway: GatewayProcess, keys: Keys, cipher: str, mac: str) -> tuple[Any, Hostile]:
    """Alice logged in to the gateway with ``cipher`` pinned; the connection and its client."""
    hostile = Hostile()
    conn, _ = await asyncssh.create_connection(
        lambda: hostile,
        "127.0.0.1",
        gateway.port,
        username=LOGIN,
        client_keys=[str(keys.alice)],
        known_hosts=None,
        agent_path=None,
        config=None,
        encryption_algs=[cipher],
        mac_algs=[mac],
        compression_algs=None,
    )
    return conn, hostile
