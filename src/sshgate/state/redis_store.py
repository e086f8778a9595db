"""The records of §12 in Redis or Valkey: what each operation reads and writes, atomically.

Every record is sealed (seal.py) and every read opens it: a record that fails its HMAC counts,
binds and locks nothing. Errors and slowness surface as exceptions; the caller (replicated.py)
bounds each call and falls back. Needs a single primary (ElastiCache with cluster mode off):
the session script reads the keys of the replicas its entries name.

Keys under ``key_prefix`` (docs/operations.md, "Replicas"):
``lock:<addr>`` sealed lockout with a TTL; ``fail:<addr>`` list of sealed failures, expiring
``lockout_s`` after the first of a run; ``replica:<id>`` a replica's heartbeat with the TTL
``session_ttl_s``; ``user:<hash>`` and ``live`` hashes of sealed session entries (the user's for
counting, ``live`` for the registry); ``seq`` orders session entries; ``bindings``, ``stepups``
and ``bindings:version`` the SSO records; channels ``locks`` (every new lockout, which replicas
mirror so a login's lockout check needs no round trip), ``ctl:<replica>`` (terminate) and
``out:<session>`` (encrypted live output); ``web:<kind>:<sha256>`` the web app's records
(browser sessions, sign-ins in flight, one-time links) under the hash of their cookie or token,
sealed private (encrypted), with the store's TTL; a single-use one is taken with GETDEL
(Redis 6.2 or later, any Valkey), so two replicas cannot both accept it.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sshgate.oidc.bindings import KeyBinding
from sshgate.state.base import LiveSession, OutputChunk, RecordKind
from sshgate.state.records import Entry
from sshgate.state.seal import Sealer

# The entries of a session hash whose replica still heartbeats; the others (a crashed replica's
# sessions) are dropped from it and from ``also``.
# A live output frame: channel number and seconds since the channel opened, then the bytes.
_CHUNK_HEAD = struct.Struct(">Id")

_LIVE_ENTRIES = """
local function live_entries(key, also, prefix)
  local all = redis.call('HGETALL', key)
  local out = {}
  for i = 1, #all, 2 do
    local rid = string.match(all[i + 1], '"r":"([0-9a-f]+)"')
    if rid and redis.call('EXISTS', prefix .. rid) == 1 then
      out[#out + 1] = all[i]
      out[#out + 1] = all[i + 1]
    else
      redis.call('HDEL', key, all[i])
      if also then redis.call('HDEL', also, all[i]) end
    end
  end
  return out
end
"""

# Adds one session entry and refreshes this replica's heartbeat; returns the entry's place in
# line and the user's live entries (the caller counts the ones that verify).
_OPEN_SESSION = (
    _LIVE_ENTRIES
    + """
redis.call('SET', KEYS[4], ARGV[4], 'EX', ARGV[5])
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], ARGV[1], seq .. '|' .. ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[6])
local out = live_entries(KEYS[1], KEYS[2], ARGV[3])
table.insert(out, 1, seq)
return out
"""
)

_LIVE_SESSIONS = _LIVE_ENTRIES + "return live_entries(KEYS[1], false, ARGV[1])\n"

# One failed attempt; the run expires lockout_s after its first failure.
_FAILURE = """
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n > 256 then redis.call('LTRIM', KEYS[1], -256, -1) end
return redis.call('LRANGE', KEYS[1], 0, -1)
"""


def connect(url: str, timeout_s: float) -> aioredis.Redis:
    """A client that never retries on its own: the caller decides what a slow store means."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        max_connections=64,
    )


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class Revocation:
    """A revoked binding's tombstone: bindings signed in at or before ``at`` stay revoked, until
    ``until`` (when the revoked binding would have expired anyway)."""

    at: float
    until: float


class RedisStore:
    def __init__(
        self,
        client: aioredis.Redis,
        sealer: Sealer,
        prefix: str,
        replica: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.sealer = sealer
        self.prefix = prefix
        self.replica = replica
        self._clock = clock
        # Told the kind of each record that fails its HMAC (the caller logs, rate-limited).
        self.on_forged: Callable[[str], None] = lambda _kind: None
        self._open_session = client.register_script(_OPEN_SESSION)
        self._live = client.register_script(_LIVE_SESSIONS)
        self._failure = client.register_script(_FAILURE)

    def _open(self, kind: str, context: str, sealed: bytes | str | None) -> dict[str, Any] | None:
        doc = self.sealer.open(context, sealed)
        if doc is None and sealed is not None:
            self.on_forged(kind)
        return doc

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def ping(self) -> str | None:
        """The bindings' version: a cheap health probe that also says when to re-read them."""
        version = await self.client.get(self.key("bindings", "version"))
        return as_text(version) if version is not None else None

    # Lockouts

    def _lock_until(self, address: str, sealed: bytes | str | None) -> float | None:
        doc = self._open("lock", f"lock:{address}", sealed)
        if doc is None or doc.get("a") != address:
            return None
        return float(doc["until"])

    async def locked_for(self, address: str) -> float:
        """One GET: the sealed record says until when (a replayed old record has passed it)."""
        until = self._lock_until(address, await self.client.get(self.key("lock", address)))
        return max(0.0, until - self._clock()) if until is not None else 0.0

    async def all_locks(self) -> dict[str, float]:
        """Every address locked now, and until when: a replica's mirror starts from this."""
        keys = [k async for k in self.client.scan_iter(match=self.key("lock", "*"), count=1000)]
        prefix, found = self.key("lock", ""), {}
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            for key, sealed in zip(chunk, await self.client.mget(chunk), strict=True):
                address = as_text(key).removeprefix(prefix)
                until = self._lock_until(address, sealed)
                if until is not None and until > self._clock():
                    found[address] = until
        return found

    def lock_channel(self) -> str:
        return self.key("locks")

    def lock_message(self, data: bytes | str) -> tuple[str, float] | None:
        """A lockout another replica announced: the address and its sealed record."""
        address, _, sealed = as_text(data).partition(" ")
        until = self._lock_until(address, sealed)
        return (address, until) if until is not None else None

    async def failure(self, address: str, limit: int, lockout_s: float, at: float | None = None) -> bool:
        """Count one failure (``at``: when it happened, for one replayed after an outage)."""
        at = self._clock() if at is None else at
        entry = self.sealer.seal(f"fail:{address}", {"a": address, "t": at, "n": secrets.token_hex(8)})
        window_ms = max(1, int(lockout_s * 1000))
        entries = await self._failure(keys=[self.key("fail", address)], args=[entry, window_ms])
        now = self._clock()
        nonces = set()
        for raw in entries:
            doc = self._open("failure", f"fail:{address}", raw)
            if doc is not None and doc.get("a") == address and now - float(doc["t"]) < lockout_s:
                nonces.add(doc["n"])
        if len(nonces) < limit:
            return False
        await self.lock(address, now + lockout_s)
        await self.client.delete(self.key("fail", address))
        return True

    async def lock(self, address: str, until: float, only_if_unlocked: bool = False) -> None:
        ttl_ms = int((until - self._clock()) * 1000)
        if ttl_ms <= 0:
            return
        sealed = self.sealer.seal(f"lock:{address}", {"a": address, "until": until})
        if await self.client.set(self.key("lock", address), sealed, px=ttl_ms, nx=only_if_unlocked):
            await self.client.publish(self.lock_channel(), f"{address} {sealed}")

    # Sessions

    def _user_key(self, user: str) -> str:
        return self.key("user", hashlib.sha256(user.encode()).hexdigest()[:32])

    def _seal_session(self, session: LiveSession) -> str:
        doc: dict[str, Any] = {"s": session.session_id, "r": session.replica, "u": session.user}
        doc |= {"res": session.resource, "t": session.started_at}
        return self.sealer.seal(f"session:{session.session_id}", doc)

    def _open_entry(self, session_id: str, sealed: bytes | str) -> LiveSession | None:
        doc = self._open("session", f"session:{session_id}", sealed)
        if doc is None or doc.get("s") != session_id:
            return None
        return LiveSession(session_id, str(doc["r"]), str(doc["u"]), str(doc["res"]), float(doc["t"]))

    async def open_session(self, session: LiveSession, limit: int | None, ttl_s: int) -> bool:
        """Add the entry; admitted when fewer than ``limit`` verified entries of the user came
        before it (None: re-registering a session already admitted)."""
        heartbeat = self.sealer.seal(f"replica:{self.replica}", {"r": self.replica, "t": self._clock()})
        result = await self._open_session(
            keys=[
                self._user_key(session.user),
                self.key("live"),
                self.key("seq"),
                self.key("replica", self.replica),
            ],
            args=[
                session.session_id,
                self._seal_session(session),
                self.key("replica", ""),
                heartbeat,
                ttl_s,
                max(ttl_s, 86400),
            ],
        )
        if limit is None:
            return True
        mine, entries = int(result[0]), result[1:]
        before = 0
        for field, value in zip(entries[::2], entries[1::2], strict=True):
            seq, _, sealed = as_text(value).partition("|")
            other = self._open_entry(as_text(field), sealed)
            if other is not None and other.user == session.user and int(seq) < mine:
                before += 1
        if before < limit:
            return True
        await self.close_session(session)
        return False

    async def close_session(self, session: LiveSession) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(self._user_key(session.user), session.session_id)
            pipe.hdel(self.key("live"), session.session_id)
            await pipe.execute()

    async def heartbeat(self, ttl_s: int) -> bool:
        """Refresh this replica's heartbeat; False when the store had lost it (restarted empty, or
        this replica was silent past the TTL), so its sessions must be registered again."""
        sealed = self.sealer.seal(f"replica:{self.replica}", {"r": self.replica, "t": self._clock()})
        previous = await self.client.set(self.key("replica", self.replica), sealed, ex=ttl_s, get=True)
        return previous is not None

    async def live_sessions(self) -> list[LiveSession]:
        entries = await self._live(keys=[self.key("live")], args=[self.key("replica", "")])
        found = (self._open_entry(as_text(f), v) for f, v in zip(entries[::2], entries[1::2], strict=True))
        return [s for s in found if s is not None]

    async def session(self, session_id: str) -> LiveSession | None:
        sealed = await self.client.hget(self.key("live"), session_id)
        return self._open_entry(session_id, sealed) if sealed is not None else None

    # Terminate and live output

    async def send_terminate(self, replica: str, session_id: str, by: str) -> int:
        return await self._control(replica, {"op": "terminate", "s": session_id, "by": by})

    async def send_watch(self, replica: str, session_id: str) -> int:
        """Ask the owning replica to publish the session's output for the next while (a lease)."""
        return await self._control(replica, {"op": "watch", "s": session_id})

    async def _control(self, replica: str, doc: dict[str, Any]) -> int:
        doc = {**doc, "t": self._clock(), "n": secrets.token_hex(8)}
        return int(
            await self.client.publish(self.key("ctl", replica), self.sealer.seal(f"ctl:{replica}", doc))
        )

    def control_channel(self) -> str:
        return self.key("ctl", self.replica)

    async def publish_output(self, session_id: str, chunk: OutputChunk) -> None:
        frame = _CHUNK_HEAD.pack(chunk.channel, chunk.t) + chunk.data
        await self.client.publish(
            self.key("out", session_id), self.sealer.encrypt(f"out:{session_id}", frame)
        )

    async def output(self, pubsub: PubSub, session_id: str) -> AsyncIterator[OutputChunk]:
        """Decrypted chunks from a pubsub already subscribed to the session's channel."""
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            frame = self.sealer.decrypt(f"out:{session_id}", bytes(message["data"]))
            if frame is not None and len(frame) >= _CHUNK_HEAD.size:
                channel, t = _CHUNK_HEAD.unpack_from(frame)
                yield OutputChunk(channel, t, frame[_CHUNK_HEAD.size :])

    # SSO key bindings and step-ups

    def _seal_binding(self, binding: KeyBinding) -> str:
        doc: dict[str, Any] = asdict(binding)
        doc["groups"] = list(binding.groups)
        return self.sealer.seal(f"binding:{binding.fingerprint}", doc)

    def _open_binding(self, fingerprint: str, sealed: bytes | str | None) -> KeyBinding | None:
        doc = self._open("binding", f"binding:{fingerprint}", sealed)
        if doc is None or doc.get("fingerprint") != fingerprint:
            return None
        try:
            return KeyBinding(
                fingerprint,
                str(doc["provider"]),
                str(doc["email"]),
                tuple(str(g) for g in doc["groups"]),
                float(doc["signed_in_at"]),
                float(doc["expires_at"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    async def binding(self, fingerprint: str) -> KeyBinding | None:
        return self._open_binding(fingerprint, await self.client.hget(self.key("bindings"), fingerprint))

    async def all_bindings(self) -> dict[str, KeyBinding]:
        """Every binding that verifies."""
        raw = await self.client.hgetall(self.key("bindings"))
        found = {}
        for field, value in raw.items():
            fingerprint = as_text(field)
            binding = self._open_binding(fingerprint, value)
            if binding is not None:
                found[fingerprint] = binding
        return found

    async def bind(self, bindings: Iterable[KeyBinding]) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            for binding in bindings:
                pipe.hset(self.key("bindings"), binding.fingerprint, self._seal_binding(binding))
            pipe.incr(self.key("bindings", "version"))
            await pipe.execute()

    async def unbind(self, bindings: Iterable[KeyBinding], at: float) -> None:
        """Remove the bindings and leave a sealed tombstone for each until it would have expired:
        the old sealed value written back (by anyone with write access to the store) stays revoked."""
        gone = list(bindings)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(self.key("bindings"), *(b.fingerprint for b in gone))
            for b in gone:
                tombstone = {"fingerprint": b.fingerprint, "at": at, "e": b.expires_at}
                sealed = self.sealer.seal(f"revoked:{b.fingerprint}", tombstone)
                pipe.hset(self.key("revoked"), b.fingerprint, sealed)
            pipe.incr(self.key("bindings", "version"))
            await pipe.execute()

    async def revocations(self) -> dict[str, Revocation]:
        """Every tombstone that verifies and still matters; the others are removed."""
        raw = await self.client.hgetall(self.key("revoked"))
        found: dict[str, Revocation] = {}
        stale = []
        for field, value in raw.items():
            fingerprint = as_text(field)
            doc = self._open("revoked", f"revoked:{fingerprint}", value)
            if doc is None or doc.get("fingerprint") != fingerprint:
                continue
            try:
                revocation = Revocation(float(doc["at"]), float(doc["e"]))
            except (KeyError, TypeError, ValueError):
                continue
            if revocation.until > self._clock():
                found[fingerprint] = revocation
            else:
                stale.append(fingerprint)
        if stale:
            await self.client.hdel(self.key("revoked"), *stale)
        return found

    async def step_up_at(self, provider: str, email: str) -> float | None:
        field = f"{provider}:{email}"
        doc = self._open("step_up", f"stepup:{field}", await self.client.hget(self.key("stepups"), field))
        return float(doc["at"]) if doc is not None else None

    async def record_step_up(self, provider: str, email: str, at: float) -> None:
        field = f"{provider}:{email}"
        await self.client.hset(self.key("stepups"), field, self.sealer.seal(f"stepup:{field}", {"at": at}))

    async def forget_step_ups(self, email: str) -> None:
        fields = [
            f
            for f in map(as_text, await self.client.hkeys(self.key("stepups")))
            if f.split(":", 1)[-1] == email
        ]
        if fields:
            await self.client.hdel(self.key("stepups"), *fields)

    # The web app's records

    def _record_key(self, kind: RecordKind, key: str) -> str:
        return self.key("web", kind, key)

    async def put_record(
        self, kind: RecordKind, key: str, doc: dict[str, Any], expires_at: float, only_new: bool = False
    ) -> bool:
        """Store a record (``only_new``: unless one is there); whether it was stored."""
        ttl_ms = int((expires_at - self._clock()) * 1000)
        if ttl_ms <= 0:
            return False
        sealed = self.sealer.seal_private(f"web:{kind}:{key}", {"d": doc, "e": expires_at})
        return bool(await self.client.set(self._record_key(kind, key), sealed, px=ttl_ms, nx=only_new))

    def _open_record(self, kind: RecordKind, key: str, sealed: bytes | str | None) -> Entry | None:
        raw = sealed.encode() if isinstance(sealed, str) else sealed
        doc = self.sealer.open_private(f"web:{kind}:{key}", raw)
        if doc is None:
            if sealed is not None:
                self.on_forged(f"web_{kind}")
            return None
        body, expires_at = doc.get("d"), doc.get("e")
        if not isinstance(body, dict) or not isinstance(expires_at, (int, float)):
            return None
        return (body, float(expires_at)) if expires_at > self._clock() else None

    async def record_entry(self, kind: RecordKind, key: str) -> Entry | None:
        return self._open_record(kind, key, await self.client.get(self._record_key(kind, key)))

    async def take_record(self, kind: RecordKind, key: str) -> dict[str, Any] | None:
        entry = self._open_record(kind, key, await self.client.getdel(self._record_key(kind, key)))
        return entry[0] if entry is not None else None

    async def drop_record(self, kind: RecordKind, key: str) -> None:
        await self.client.delete(self._record_key(kind, key))

    async def claim_record(self, kind: RecordKind, key: str, expires_at: float) -> bool:
        return await self.put_record(kind, key, {}, expires_at, only_new=True)
