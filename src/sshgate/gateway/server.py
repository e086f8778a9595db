"""The gateway process: listen, hold the current configuration, reload it, stop gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import asyncssh

from sshgate import asyncssh_checks, asyncssh_tuning, audit
from sshgate.aws.access import AwsAccess
from sshgate.aws.discovery import Discoverer
from sshgate.config import Config, ConfigError, load_config
from sshgate.gateway.binding import BindContext
from sshgate.gateway.connection import GatewayConnection, GatewayState
from sshgate.gateway.proxy_listener import ProxyProtocolListener
from sshgate.gateway.sso import Sso
from sshgate.gateway.workers import WORKER_ENV, Supervisor
from sshgate.hostkey import load_or_create_host_keys
from sshgate.metrics import Metrics, MetricsServer, ready_marker, use_multiprocess_dir
from sshgate.oidc.client import OidcClient
from sshgate.policy.loader import ReloadableDecisionPoint
from sshgate.policy.sources import PolicyLoadError
from sshgate.policy.watch import watch_policies
from sshgate.recording.build import build_recorder
from sshgate.recording.catalog import open_catalog
from sshgate.recording.recorder import NullRecorder, Recorder, RecordingError
from sshgate.revoked_keys import RevokedKeysFile
from sshgate.ssh_algorithms import ENCRYPTION_ALGS
from sshgate.state.build import build_state, web_sealer
from sshgate.web.app import WebApp


class Gateway:
    """Serves SSH on ``config.listen``; each new connection sees the configuration of its moment."""

    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config_path = config_path
        self.recorder: Recorder = NullRecorder()
        self._initial = config
        self.ctx: BindContext | None = None
        self.discovery = Discoverer(config)
        self.metrics = Metrics()
        # What workers and replicas share (docs/operations.md, "Replicas"); fixed until restart.
        self.state = GatewayState(build_state(config, self.metrics.state_available), self.metrics)
        self._metrics_server: MetricsServer | None = None
        self.web: WebApp | None = None
        self.log = audit.logger()
        self._server: asyncssh.SSHAcceptor | None = None
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reloading = asyncio.Lock()
        self._waiting_reload: asyncio.Task[bool] | None = None
        self.draining = False
        self.port = 0

    @property
    def config(self) -> Config:
        return self.ctx.config if self.ctx else self._initial

    def _context(self) -> BindContext:
        assert self.ctx is not None
        return self.ctx

    async def start(self) -> None:
        """Load policies and keys, then listen; any failure here stops start-up with a clear error."""
        config = self.config
        # Recordings first: a gateway that cannot record must not serve (fail closed).
        self.recorder = build_recorder(config)
        interrupted = await self.recorder.start()
        if interrupted:
            self.log.warning("recording.interrupted", sessions=interrupted)
        self.state.revoked_keys = RevokedKeysFile(config.identities.revoked_keys)
        await self.state.shared.start(self.state.terminate, self.state.revoked)
        self.policy = await ReloadableDecisionPoint.open(config.policies)
        self.ctx = self._bind_context(config)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(watch_policies(self.policy, self._stopped)),
            loop.create_task(self._housekeeping()),
            loop.create_task(self.discovery.run(self._stopped)),
        ]
        self._use_sso(config)
        keys = load_or_create_host_keys(config.host_key_paths)
        listen: dict[str, object] = {"reuse_port": config.workers > 1}
        if config.listen.proxy_protocol:
            # Behind a load balancer: the PROXY header names the client (docs/operations.md).
            listen = {
                "tunnel": ProxyProtocolListener(
                    config.listen.trusted_proxies, config.limits.max_unauthenticated, config.workers > 1
                )
            }
        self._server = await asyncssh.create_server(
            lambda: GatewayConnection(self._context(), self.state),
            config.listen.host,
            config.listen.port,
            server_host_keys=keys,
            server_version="sshgate",
            encryption_algs=ENCRYPTION_ALGS,
            compression_algs=None,
            # Each connection times its own login: login_grace_s, or sign_in_timeout_s while a
            # sign-in runs (Authenticator._arm_grace, gateway/authentication.py).
            login_timeout=0,
            # A listener exists only for a client that asks; ClientSession decides per resource
            # whether the upstream ever reaches it.
            agent_forwarding=True,
            x11_forwarding=False,
            allow_scp=False,
            line_editor=False,
            keepalive_interval=60,
            **listen,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._set_worker_ready(True)
        if config.metrics.listen and config.workers == 1:
            self._metrics_server = MetricsServer(self.metrics.registry, self.ready)
            await self._metrics_server.start(config.metrics.listen)
            self.log.info("metrics.listening", listen=config.metrics.listen, port=self._metrics_server.port)
        if config.web is not None and os.environ.get(WORKER_ENV, "0") == "0":
            # One web app per gateway (worker 0); it reaches every worker's sessions via the state.
            sealer = web_sealer(config)
            self.web = WebApp(config.web, open_catalog(config), self.state.shared, sealer, self._oidc_client)
            await self.web.start()
            self.log.info("web.listening", listen=config.web.listen, port=self.web.port)
        self.log.info(
            "gateway.listening",
            host=config.listen.host,
            port=self.port,
            host_keys=[str(p) for p in config.host_key_paths],
            fingerprints=[k.get_fingerprint() for k in keys],
        )

    def _set_worker_ready(self, ready: bool) -> None:
        if WORKER_ENV not in os.environ:
            return
        marker = ready_marker(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]), os.getpid())
        if ready:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

    def ready(self) -> bool:
        """``/readyz``: config, keys and policies loaded, the SSH port listening, not draining."""
        return self.ctx is not None and self._server is not None and not self.draining

    async def reload(self) -> bool:
        """Swap in the configuration file and its policies together; anything bad keeps the old set.

        One reload at a time: of two close SIGHUPs, the file read last is the one applied last.
        A SIGHUP while one reload waits behind another shares the waiting one, which reads the
        file after it anyway: a storm of signals costs two rebuilds, not one per signal.
        """
        waiting = self._waiting_reload
        if waiting is None:
            waiting = self._waiting_reload = asyncio.get_running_loop().create_task(self._next_reload())
        return await asyncio.shield(waiting)

    async def _next_reload(self) -> bool:
        async with self._reloading:
            self._waiting_reload = None  # running now: a SIGHUP from here on reads the file again
            return await self._reload()

    async def _reload(self) -> bool:
        if self.config_path is None or self.ctx is None:
            return False
        recorder = self.recorder
        try:
            config = load_config(self.config_path)
            revoked_keys = RevokedKeysFile(config.identities.revoked_keys)
            if _recording_settings(config) != _recording_settings(self.config):
                recorder = build_recorder(config)
                await recorder.start()
            await self.policy.reload(config.policies)
        except (ConfigError, PolicyLoadError, RecordingError) as exc:
            if recorder is not self.recorder:
                await recorder.aclose()
            self.log.error("config.reload", result="refused", reason=str(exc))
            return False
        if recorder is not self.recorder:
            self._tasks.append(asyncio.get_running_loop().create_task(self.recorder.retire(self._stopped)))
            self.recorder = recorder
        self.discovery.configure(config)
        self.state.revoked_keys = revoked_keys
        self.ctx = self._bind_context(config)
        self._use_sso(config)
        self.log.info("config.reload", result="ok", resources=len(config.resources))
        return True

    def _bind_context(self, config: Config) -> BindContext:
        return BindContext(
            config, self.policy, self.recorder, AwsAccess(config.aws), lambda: self.discovery.resources
        )

    def _oidc_client(self) -> OidcClient | None:
        return self.state.sso.client if self.state.sso is not None else None

    def _use_sso(self, config: Config) -> None:
        """Start, change or stop single sign-on; a new provider client only when its block changed.

        Sign-ins already running finish with the client they started with.
        """
        old = self.state.sso
        oidc = config.identities.oidc
        if old is not None and oidc == old.config:
            return
        self.state.sso = Sso(oidc, self.state.shared) if oidc is not None else None
        if old is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(_close_later(old)))

    async def _housekeeping(self) -> None:
        """Enforce the idle timeout and the maximum session length, checking a few times per limit."""
        while not self._stopped.is_set():
            limits = self.config.limits
            tick = max(0.2, min(5.0, limits.idle_timeout_s / 4, limits.max_session_s / 4))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), tick)
            now = time.monotonic()
            for conn in list(self.state.connections):
                if not conn.authenticated:
                    continue
                if now - conn.started >= limits.max_session_s:
                    conn.close_with_notice(
                        f"session closed: it reached the maximum length of {limits.max_session_s:g} s",
                        "limit.max_session",
                        "max_session",
                    )
                elif conn.idle_for(now) >= limits.idle_timeout_s:
                    conn.close_with_notice(
                        f"session closed after {limits.idle_timeout_s:g} s without activity",
                        "limit.idle",
                        "idle_timeout",
                    )

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stop accepting, give open sessions ``grace_s`` to finish, then close them with a notice.

        Recordings of every session are finalized before this returns.
        """
        self.draining = True
        self._set_worker_ready(False)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.log.info("gateway.draining", sessions=len(self.state.connections), grace_s=grace_s)
        deadline = time.monotonic() + grace_s
        while self.state.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for conn in list(self.state.connections):
            conn.close_with_notice("the gateway is restarting; please reconnect", "session.drained", "drain")
        deadline = time.monotonic() + 10
        while (self.state.connections or self.state.unbinding) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._stopped.set()
        await asyncio.gather(*self._tasks)
        await self.state.shared.aclose()
        if self.state.sso is not None:
            await self.state.sso.aclose()
        await self.policy.aclose()
        await self.recorder.aclose()
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        if self.web is not None:
            await self.web.stop()

    async def serve_forever(self) -> None:
        """Run until SIGTERM/SIGINT; SIGHUP reloads the configuration."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await self.start()
        await stop.wait()
        await self.stop(self.config.shutdown_grace_s)
        self.log.info("gateway.stopped")


async def _close_later(sso: Sso, after_s: float = 600.0) -> None:
    """Close a replaced provider client once the sign-ins it started can have ended."""
    await asyncio.sleep(min(after_s, sso.config.sign_in_timeout_s + 30))
    await sso.aclose()


def _recording_settings(config: Config) -> tuple[object, ...]:
    """What a recorder is built from: a change needs a new recorder for new sessions."""
    return (config.recording, config.recording_dir, config.aws)


async def serve(config_path: str) -> int:
    """Run one gateway, or with ``workers: N`` a supervisor of N worker processes."""
    config = load_config(config_path)
    if config.workers > 1 and WORKER_ENV not in os.environ:
        return await Supervisor(config, config_path).run()
    if WORKER_ENV in os.environ:
        use_multiprocess_dir(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
    asyncssh_checks.apply()
    asyncssh_tuning.apply()
    gateway = Gateway(config, config_path)
    await gateway.serve_forever()
    return 0
