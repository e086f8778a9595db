"""Pick the shared state a gateway process uses: Redis/Valkey with ``state:``, else its supervisor
(a worker of ``workers: N``), else the process itself."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

from sshgate.config import MIN_HMAC_KEY_CHARS, Config, ConfigError, State
from sshgate.native_secret import SecretError, read_indirect
from sshgate.state.base import SharedState
from sshgate.state.hosted import WORKER_STATE_FD, WorkerState
from sshgate.state.local import LocalState
from sshgate.state.seal import Sealer


def state_secrets(state: State) -> tuple[str, str]:
    """The store URL and HMAC key, ``ENV:``/``FILE:`` followed; errors name where, never what."""
    try:
        url, url_from = read_indirect(state.url)
        key = read_indirect(state.hmac_key)[0].strip()
    except SecretError as exc:
        raise ConfigError(f"state: {exc}") from None
    url = url.strip()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("state.url must be a redis://, rediss:// or unix:// URL")
    if not _password_whole(url):
        raise ConfigError(
            f"state.url from {url_from} is not a valid URL; percent-encode the password "
            "(docs/configuration.md, state)"
        )
    if len(key) < MIN_HMAC_KEY_CHARS:
        raise ConfigError(f"state.hmac_key must be at least {MIN_HMAC_KEY_CHARS} characters")
    return url, key


def _password_whole(url: str) -> bool:
    """Whether the URL parses, as redis-py will parse it, with the password in the address.

    An unencoded '#', '/' or '?' ends the address inside the password: the rest is then taken for
    the port (a ValueError quoting it, which would go out as a traceback) or, past the host, for
    the path, query or fragment.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # reading it parses it
    except ValueError:
        return False
    # A query is name=value pairs (redis-py reads ?password=... there): a password cut short by
    # '?' shows as an '@' before the first '='.
    return "@" not in parts.path + parts.fragment + parts.query.partition("=")[0]


def build_state(config: Config, set_gauge: Callable[[bool], None]) -> SharedState:
    if config.state is not None:
        # Imported here: the Redis client costs every other gateway a second of start-up.
        from sshgate.state.redis_store import RedisStore, connect
        from sshgate.state.replicated import ReplicatedState

        url, key = state_secrets(config.state)
        timeout_s = config.state.timeout_ms / 1000
        store = RedisStore(connect(url, timeout_s), Sealer(key), config.state.key_prefix, uuid.uuid4().hex)
        return ReplicatedState(store, timeout_s, config.state.session_ttl_s, set_gauge)
    set_gauge(True)
    if WORKER_STATE_FD in os.environ:
        return WorkerState(int(os.environ[WORKER_STATE_FD]), config.data_dir, set_gauge)
    return LocalState(config.data_dir)


def web_sealer(config: Config) -> Sealer:
    """What the web app seals its sign-ins in flight with: under ``state.hmac_key``, so every
    replica opens what another sealed; else a key of this process's own (the gateway's one web
    app, in worker 0: a restart of it only asks sign-ins in flight to start again)."""
    if config.state is not None:
        return Sealer(state_secrets(config.state)[1])
    return Sealer(secrets.token_urlsafe(32))
