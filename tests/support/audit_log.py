"""An audit logger for unit tests: records each event and its fields, in order."""

from __future__ import annotations

from typing import Any


class RecordedLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _record(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    info = warning = error = _record

    def named(self, event: str) -> list[dict[str, Any]]:
        """The fields of every ``event``, oldest first."""
        return [fields for name, fields in self.events if name == event]
