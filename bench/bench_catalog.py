"""Catalog benchmark (issue 16): the sessions list over many local recordings.

Writes N fake sessions (tests/support/recordings.py; one in 20 with terminal output), then times,
through the async interface as the web app calls it: the cold first page (the index is built),
the warm first page, a filtered page (user + resource), a role-user page (owner_email), the
first page after a session started (incremental refresh), and a page of output-text matches.
Target: warm first page and filtered page < 300 ms at 10,000 sessions.
Run: .venv/bin/python -m bench.bench_catalog [--sessions 10000] [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.support.recordings import Fake, write_session, write_sessions

from sshgate.recording.catalog import RecordingCatalog, SessionQuery
from sshgate.recording.sources import LocalSource


def output(fake: Fake) -> bytes | None:
    return (
        f"$ uptime\r\n\x1b[1mload {fake.i}\x1b[0m needle-{fake.i % 7}\r\n".encode()
        if fake.i % 20 == 0
        else None
    )


async def timed(call: Callable[[], Awaitable[Any]], runs: int) -> tuple[float, float]:
    """Median and worst milliseconds of ``runs`` calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sshgate-bench-catalog-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        write_sessions(root, args.sessions, output)
        print(f"wrote {args.sessions} sessions in {time.perf_counter() - start:.1f} s")
        catalog = RecordingCatalog([LocalSource(root)])
        start = time.perf_counter()
        page, _ = await catalog.query(SessionQuery())
        print(f"cold first page (builds the index):   {(time.perf_counter() - start) * 1000:8.1f} ms")
        assert len(page) == 50
        cases: list[tuple[str, SessionQuery]] = [
            ("warm first page", SessionQuery()),
            ("filtered page (user + resource)", SessionQuery(user="alice@corp.com", resource="web-1")),
            ("role user page (owner_email)", SessionQuery(owner_email="bob@corp.com")),
            ("status=active page", SessionQuery(status="active")),
            ("filter matching nothing (reads all)", SessionQuery(user="nobody@corp.com")),
        ]
        for name, query in cases:
            median, worst = await timed(lambda q=query: catalog.query(q), args.runs)  # type: ignore[misc]
            print(f"{name + ':':38} {median:8.1f} ms median, {worst:.1f} worst")
        new = [args.sessions]

        async def after_new_session() -> Any:
            write_session(root, Fake(new[0]))
            new[0] += 1
            found, _ = await catalog.query(SessionQuery(limit=1))
            assert found[0].id == Fake(new[0] - 1).id
            return found

        median, worst = await timed(after_new_session, args.runs)
        print(f"{'first page after a new session:':38} {median:8.1f} ms median, {worst:.1f} worst")
        median, worst = await timed(lambda: catalog.query(SessionQuery(q="needle-3", limit=10)), 3)
        print(f"{'q= page (10 matches, reads output):':38} {median:8.1f} ms median, {worst:.1f} worst")


if __name__ == "__main__":
    asyncio.run(main())
