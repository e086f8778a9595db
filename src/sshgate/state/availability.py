"""Whether the shared store answers, as ``sshgate_state_available`` and a log line: once when it
goes away, then once a minute while it stays away, and once when it is back."""

from __future__ import annotations

import time
from collections.abc import Callable

from sshgate import audit

REPEAT_S = 60.0


class Availability:
    def __init__(
        self, set_gauge: Callable[[bool], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._set_gauge = set_gauge
        self._clock = clock
        self._log = audit.logger()
        self.available = True
        self._since = 0.0
        self._logged_at = 0.0
        set_gauge(True)

    def down(self, reason: str) -> None:
        now = self._clock()
        if self.available:
            self.available = False
            self._since = now
            self._set_gauge(False)
        elif now - self._logged_at < REPEAT_S:
            return
        self._logged_at = now
        self._log.warning(
            "state.unavailable",
            reason=reason,
            for_s=round(now - self._since, 1),
            fallback="counters and caps are this replica's alone",
        )

    def up(self) -> None:
        if self.available:
            return
        self.available = True
        self._set_gauge(True)
        self._log.info("state.available", after_s=round(self._clock() - self._since, 1))
