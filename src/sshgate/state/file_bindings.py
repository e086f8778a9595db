"""SSO key bindings of a gateway without ``state:``: the binding file in ``data_dir``, which the
workers of one gateway and ``sshgate keys`` share through its lock (oidc/bindings.py)."""

from __future__ import annotations

import asyncio

from sshgate.oidc.bindings import BindingStore, KeyBinding
from sshgate.state.base import RevokedHandler


class FileBindings:
    def __init__(self, data_dir: str) -> None:
        self.binding_file = BindingStore(data_dir)

    async def binding(self, fingerprint: str) -> KeyBinding | None:
        return self.binding_file.lookup(fingerprint)

    async def bind(self, binding: KeyBinding) -> None:
        self.binding_file.bind(binding)

    async def bindings(self) -> list[KeyBinding]:
        return self.binding_file.bindings()

    async def revoke(self, fingerprint: str | None = None, email: str | None = None) -> list[KeyBinding]:
        return self.binding_file.revoke(fingerprint, email)

    async def step_up_at(self, provider: str, email: str) -> float | None:
        return self.binding_file.step_up_at(provider, email)

    async def record_step_up(self, provider: str, email: str, at: float) -> None:
        self.binding_file.record_step_up(provider, email, at)

    def watch_bindings(self, on_revoked: RevokedHandler, stop: asyncio.Event) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self.binding_file.watch(on_revoked, stop))
