"""``workers: N``: N gateway processes share the SSH port with SO_REUSEPORT, each with its own
event loop; this supervisor starts them, passes signals on, restarts a crashed one, and serves
their summed metrics on one endpoint. Without ``state:`` it also holds what the workers share
(lockouts, session counts, the live-session registry: sshgate.state.hosted), so an attacker gets
no more tries by landing on another worker."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from sshgate import audit
from sshgate.config import Config
from sshgate.hostkey import load_or_create_host_keys
from sshgate.metrics import (
    MetricsServer,
    multiprocess_registry,
    prepare_multiprocess_dir,
    ready_marker,
    worker_exited,
)
from sshgate.state.hosted import WORKER_STATE_FD, StateHost

WORKER_ENV = "SSHGATE_WORKER"
_RESTART_DELAY_S = 1.0


class Supervisor:
    def __init__(self, config: Config, config_path: str) -> None:
        self.config = config
        self.config_path = config_path
        self.metrics_dir = prepare_multiprocess_dir(Path(config.data_dir) / "metrics-multiproc")
        self.workers: dict[int, asyncio.subprocess.Process] = {}
        self.stopping = False
        self.log = audit.logger()
        self.host = StateHost() if config.state is None else None

    async def _spawn(self, index: int) -> None:
        env = {**os.environ, WORKER_ENV: str(index), "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}
        link = self.host.new_worker() if self.host is not None else None
        if link is not None:
            env[WORKER_STATE_FD] = str(link.fileno())
        try:
            self.workers[index] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sshgate.cli", "serve", "--config", self.config_path, env=env,
                pass_fds=(link.fileno(),) if link is not None else (),
            )  # fmt: skip
        finally:
            if link is not None:
                link.close()
        self.log.info("worker.started", worker=index, worker_pid=self.workers[index].pid)

    async def _watch(self, index: int) -> int:
        """Wait for a worker; restart it unless the gateway is stopping."""
        while True:
            process = self.workers[index]
            code = await process.wait()
            worker_exited(process.pid, self.metrics_dir)
            if self.stopping:
                return code
            self.log.error("worker.exited", worker=index, worker_pid=process.pid, exit_code=code)
            await asyncio.sleep(_RESTART_DELAY_S)
            await self._spawn(index)

    def _signal_all(self, sig: int) -> None:
        if sig == signal.SIGTERM:
            self.stopping = True
        for process in self.workers.values():
            if process.returncode is None:
                process.send_signal(sig)

    def ready(self) -> bool:
        """Every worker alive and itself ready (its marker file exists: config, keys, policies, port)."""
        workers = self.workers.values()
        return not self.stopping and all(
            p.returncode is None and ready_marker(self.metrics_dir, p.pid).exists() for p in workers
        )

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            loop.add_signal_handler(sig, self._signal_all, sig)
        loop.add_signal_handler(signal.SIGINT, self._signal_all, signal.SIGTERM)
        # Create the host key once, here: workers generating it at the same time would race.
        load_or_create_host_keys(self.config.host_key_paths)
        for index in range(self.config.workers):
            await self._spawn(index)
        server = None
        if self.config.metrics.listen:
            pids = lambda: [p.pid for p in self.workers.values() if p.returncode is None]  # noqa: E731
            server = MetricsServer(multiprocess_registry(self.metrics_dir, pids), self.ready)
            await server.start(self.config.metrics.listen)
            self.log.info("metrics.listening", listen=self.config.metrics.listen, port=server.port)
        codes = await asyncio.gather(*(self._watch(i) for i in range(self.config.workers)))
        if server is not None:
            await server.stop()
        if self.host is not None:
            await self.host.aclose()
        self.log.info("gateway.stopped", workers=self.config.workers, exit_codes=list(codes))
        return 0 if all(code == 0 for code in codes) else 1
