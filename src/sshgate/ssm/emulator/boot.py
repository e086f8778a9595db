"""EC2 StartInstances with the live service's timing: ``pending``, then ``running``, then an SSM
agent that answers.

moto runs a started instance at once. Through the emulator a stopped instance that is started
stays ``pending`` for ``boot_delay`` seconds, and its agent comes online ``agent_delay`` seconds
after it runs: until then DescribeInstanceInformation leaves it out and StartSession answers
TargetNotConnected, as for an instance whose agent has not registered yet. Instances the
emulator never started (created running) are online whenever moto runs them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

RUNNING = ("running", 16)
PENDING = ("pending", 0)


class Boots:
    def __init__(self, boot_delay: float = 1.0, agent_delay: float = 1.0) -> None:
        self.boot_delay = boot_delay
        self.agent_delay = agent_delay
        self._online_at: dict[str, float] = {}
        self._timers: list[asyncio.TimerHandle] = []

    def started(self, instances: list[Any]) -> None:
        """moto just started these (they were stopped): hold them in ``pending`` for a while."""
        loop = asyncio.get_running_loop()
        for instance in instances:
            _set_state(instance, PENDING)
            self._online_at[instance.id] = time.monotonic() + self.boot_delay + self.agent_delay
            self._timers.append(loop.call_later(self.boot_delay, self._boot, instance))

    def _boot(self, instance: Any) -> None:
        if instance.instance_state.name == PENDING[0]:
            _set_state(instance, RUNNING)

    def agent_online(self, instance: Any) -> bool:
        return bool(
            instance.instance_state.name == RUNNING[0]
            and time.monotonic() >= self._online_at.get(instance.id, 0.0)
        )

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()


def _set_state(instance: Any, state: tuple[str, int]) -> None:
    # moto keeps the state in a private InstanceState; its start() sets running at once.
    instance._state.name, instance._state.code = state
