"""The authentication unit without an sshd or a client: a fake transport, an in-process state
with a fake clock, real keys and real signatures."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from sshgate.config import Config
from sshgate.gateway.asyncssh_auth import OfferedKey
from sshgate.gateway.authentication import Authenticator, Unauthenticated
from sshgate.metrics import Metrics
from sshgate.refusal import Refusal
from sshgate.revoked_keys import RevokedKeysFile
from sshgate.state.counters import LocalCounters
from sshgate.state.local import LocalState
from tests.support.audit_log import RecordedLog

KEY = asyncssh.generate_private_key("ssh-ed25519")
STRANGER = asyncssh.generate_private_key("ssh-ed25519")
TOKEN = "correct horse"
DATA = b"session id and userauth request"


def cheap_hash(token: str) -> str:
    """A token hash in the configured form, with a work factor a unit test can afford."""
    salt = b"s" * 16
    digest = hashlib.scrypt(token.encode(), salt=salt, n=16, r=1, p=1, dklen=32)
    b64 = base64.b64encode
    return f"scrypt$16$1$1${b64(salt).decode()}${b64(digest).decode()}"


class Peer:
    def __init__(self) -> None:
        self.disconnected: list[tuple[int, str]] = []
        self.aborted = False

    def disconnect(self, code: int, reason: str) -> None:
        self.disconnected.append((code, reason))

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return "SSH-2.0-OpenSSH_9.6" if name == "client_version" else default


class World:
    """One gateway process's view: configuration, state with a fake clock, login slots."""

    def __init__(self, tmp_path: Path, **limits: Any) -> None:
        self.config = Config.model_validate(
            {
                "identities": {
                    "users": [
                        {
                            "email": "alice@corp.com",
                            "authorized_keys": [KEY.export_public_key().decode().strip()],
                            "tokens": [cheap_hash(TOKEN)],
                        }
                    ]
                },
                "limits": {"auth_failures_before_lockout": 3, "lockout_s": 60, **limits},
            }
        )
        self.now = 0.0
        self.state = LocalState(str(tmp_path))
        self.state.counters = LocalCounters(clock=lambda: self.now)
        self.metrics = Metrics()
        self.slots = Unauthenticated()
        self.log = RecordedLog()
        self.revoked_keys = RevokedKeysFile(None)

    def connection(self, address: str = "192.0.2.7") -> tuple[Authenticator, Peer, list[int]]:
        done: list[int] = []
        auth = Authenticator(
            self.config, self.state, self.metrics, None, self.revoked_keys, self.slots, self.log,
            lambda: done.append(1),
        )
        peer = Peer()
        assert auth.admit(peer, address)
        return auth, peer, done

    def attempts(self, method: str, result: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "sshgate_auth_attempts_total", {"method": method, "result": result}
        )
        return value or 0.0


def signed(key: asyncssh.SSHKey, by: asyncssh.SSHKey | None = None) -> OfferedKey:
    """A signed publickey request for ``key`` (signed by ``by``: a forged request)."""
    signer = by or key
    return OfferedKey(key.convert_to_public(), None, True, DATA, signer.sign(DATA, b"ssh-ed25519"))


def query(key: asyncssh.SSHKey) -> OfferedKey:
    return OfferedKey(key.convert_to_public(), None, False)


async def test_a_signed_authorized_key_authenticates(tmp_path: Path) -> None:
    world = World(tmp_path)
    auth, _, done = world.connection()
    await auth.begin("idp:human:alice@corp.com")
    assert await auth.public_key(query(KEY))  # an answered query is no attempt
    assert auth.attempts == 0
    assert await auth.public_key(signed(KEY))
    auth.complete()
    assert auth.authenticated and done == [1] and auth.method == "publickey"
    login, identity = auth.logged_in()
    assert (login.subject, identity.name) == ("alice@corp.com", "alice@corp.com")
    (success,) = world.log.named("auth.success")
    assert success["key_fingerprint"] == KEY.get_fingerprint("sha256")
    assert success["client_version"] == "SSH-2.0-OpenSSH_9.6"
    assert world.slots.total == 0 and not world.slots.per_source  # the login slot is given back
    assert auth.facts().auth_method == "publickey"
    auth.close()


async def test_stranger_and_forged_signatures_are_failures(tmp_path: Path) -> None:
    world = World(tmp_path)
    auth, _, done = world.connection()
    await auth.begin("idp:human:alice@corp.com")
    assert not await auth.public_key(query(STRANGER))  # refused query: no failure, no lockout count
    assert world.attempts("publickey", "refused") == 1
    assert not await auth.public_key(signed(STRANGER))
    assert not await auth.public_key(signed(KEY, by=STRANGER))
    reasons = [f["reason"] for f in world.log.named("auth.failure")]
    assert reasons == ["key not authorized for this identity", "the signature does not verify"]
    assert not auth.authenticated and done == []
    with pytest.raises(RuntimeError):
        auth.logged_in()
    auth.close()
    assert world.log.named("auth.abandoned")[0]["attempts"] == 3


async def test_failures_lock_the_address_out_until_the_clock_passes(tmp_path: Path) -> None:
    world = World(tmp_path)
    auth, _, _ = world.connection()
    await auth.begin("idp:human:alice@corp.com")
    assert not await auth.password("wrong")
    assert not await auth.password("wrong")
    with pytest.raises(asyncssh.DisconnectError, match=r"too many failed logins from 192\.0\.2\.7"):
        await auth.password("wrong")  # the third failure locks the address
    auth.close()
    # Every connection from that address is refused while the lockout lasts, even the right token.
    again, _, _ = world.connection()
    with pytest.raises(asyncssh.DisconnectError, match="try again in 61 s"):
        await again.begin("idp:human:alice@corp.com")
    assert world.attempts("none", "locked_out") == 1
    world.now = 61.0
    await again.begin("idp:human:alice@corp.com")
    assert await again.password(TOKEN)
    again.complete()
    assert again.authenticated and again.method == "password"
    other, _, _ = world.connection("198.51.100.1")  # another address was never locked
    await other.begin("idp:human:alice@corp.com")


async def test_attempts_are_capped_per_connection(tmp_path: Path) -> None:
    world = World(tmp_path, max_auth_tries=2, auth_failures_before_lockout=10)
    auth, _, _ = world.connection()
    await auth.begin("idp:human:alice@corp.com")
    assert not await auth.public_key(signed(STRANGER))
    assert not await auth.public_key(signed(STRANGER))
    with pytest.raises(asyncssh.DisconnectError, match="too many authentication attempts"):
        await auth.public_key(signed(KEY))  # even the right key: the tries are used up
    assert world.attempts("publickey", "too_many_tries") == 1


async def test_unauthenticated_caps_per_source_and_in_all(tmp_path: Path) -> None:
    world = World(tmp_path, max_unauthenticated=3, max_unauthenticated_per_source=2)
    first, _, _ = world.connection("192.0.2.1")
    world.connection("192.0.2.1")
    dropped = Authenticator(
        world.config, world.state, world.metrics, None, world.revoked_keys, world.slots, world.log, lambda: None
    )
    assert not dropped.admit(Peer(), "192.0.2.1")  # dropped before the banner
    assert world.log.named("connection.dropped")[0]["limit"] == 2
    world.connection("192.0.2.2")
    over, _, _ = world.connection("192.0.2.3")  # over the total: refused with a reason once asked
    with pytest.raises(asyncssh.DisconnectError, match="too many connections are logging in"):
        await over.begin("idp:human:alice@corp.com")
    first.close()
    assert world.slots.per_source["192.0.2.1"] == 1 and world.slots.total == 3


async def test_a_login_is_fixed_once_and_must_parse(tmp_path: Path) -> None:
    world = World(tmp_path)
    auth, _, _ = world.connection()
    with pytest.raises(asyncssh.DisconnectError, match="invalid login"):
        await auth.begin("idp:human:alice@corp.com+web\x1b[2J")
    auth, _, _ = world.connection()
    await auth.begin("idp:human:alice@corp.com+web-1")
    with pytest.raises(asyncssh.DisconnectError, match="the login changed during authentication"):
        await auth.begin("idp:human:alice@corp.com+db-1")
    assert len(world.log.named("login.invalid")) == 2


async def test_the_login_grace_timer_aborts_an_idle_connection(tmp_path: Path) -> None:
    world = World(tmp_path, login_grace_s=0.02)
    auth, peer, _ = world.connection()
    await auth.begin("idp:human:alice@corp.com")
    await asyncio.sleep(0.05)
    assert peer.aborted and world.log.named("connection.login_timeout")
    in_time, in_time_peer, _ = world.connection()
    await in_time.begin("idp:human:alice@corp.com")
    assert await in_time.public_key(signed(KEY))
    in_time.complete()
    await asyncio.sleep(0.05)
    assert not in_time_peer.aborted


async def test_a_step_up_without_a_provider_is_refused(tmp_path: Path) -> None:
    world = World(tmp_path)
    auth, _, _ = world.connection()
    await auth.begin("idp:human:alice@corp.com")
    assert await auth.public_key(signed(KEY))
    auth.complete()
    with pytest.raises(Refusal, match="needs a fresh sign-in, but no identity provider is configured") as exc:
        await auth.step_up("web-1")
    assert exc.value.event == "policy.mfa"


async def test_a_revoked_key_is_refused_and_counted_even_when_authorized(tmp_path: Path) -> None:
    world = World(tmp_path)
    listed = tmp_path / "revoked_keys"
    listed.write_text("# revoked after the laptop was lost\n" + KEY.export_public_key().decode())
    world.revoked_keys = RevokedKeysFile(str(listed))
    auth, _, done = world.connection()
    await auth.begin("idp:human:alice@corp.com")
    assert not await auth.public_key(query(KEY))  # not even offered: the client moves on
    assert not await auth.public_key(signed(KEY))
    assert not done and auth.attempts == 2
    assert world.log.named("auth.failure")[-1]["reason"] == "key revoked"
    listed.write_text("")  # taken off the list: the next attempt sees it, no reload needed
    assert await auth.public_key(signed(KEY))
