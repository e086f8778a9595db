"""The JSON API under ``/api/v1/`` (docs/api.md); the pages use nothing else.

Every request is checked in one order: no or invalid credentials 401; a cookie-authenticated
change without the session's ``X-CSRF-Token`` 403; an unknown or malformed id 404; not allowed
403. Ids and channel numbers only ever reach the catalog, which maps them inside the recordings.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from sshgate import audit
from sshgate.recording.catalog import Catalog, CursorError, NotFound, SessionQuery, SessionSummary
from sshgate.state.base import OutputChunk, SharedState, StateUnavailable
from sshgate.web.auth import Authenticator
from sshgate.web.roles import Principal, may_terminate, may_view, owner_filter
from sshgate.web.sse import END, KEEPALIVE, OutputEvents
from sshgate.web.store import csrf_ok

MAX_LIMIT = 200
# sftp operations, transfers and forwards shown per channel on a session's page.
MAX_EVENTS = 1000
# How often a live stream checks that its session still runs and its watcher may still see it
# (and keeps proxies from timing out).
LIVE_CHECK_S = 2.0
_FILTERS = ("user", "resource", "native_user", "status")
PRINCIPAL_KEY = web.RequestKey("sshgate.principal", Principal)


def _error(status: int, message: str) -> web.HTTPException:
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden,
           404: web.HTTPNotFound, 409: web.HTTPConflict, 429: web.HTTPTooManyRequests,
           503: web.HTTPServiceUnavailable}[status]  # fmt: skip
    return cls(text=f'{{"error": "{message}"}}', content_type="application/json")


def rfc3339(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def parse_time(name: str, value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _error(400, f"{name} is not an RFC 3339 time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _has_events(channel: dict[str, Any]) -> bool:
    """sftp, scp / rsync and forward channels keep their events in a ``.jsonl`` file."""
    return any(str(name).endswith(".jsonl") for name in channel.get("files") or ())


def summary_json(s: SessionSummary) -> dict[str, Any]:
    return {
        "id": s.id, "user": s.user, "identity": s.identity, "resource": s.resource,
        "native_user": s.native_user, "client_ip": s.client_ip, "status": s.status,
        "started": rfc3339(s.started), "ended": rfc3339(s.ended),
        "channels": [{"n": c.n, "kind": c.kind} for c in s.channels],
    }  # fmt: skip


def query_from(request: web.Request, principal: Principal) -> SessionQuery:
    args = request.query
    try:
        limit = int(args.get("limit", "50"))
    except ValueError:
        raise _error(400, "limit is not a number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise _error(400, f"limit must be 1 to {MAX_LIMIT}")
    filters = {name: args.get(name) or None for name in _FILTERS}
    return SessionQuery(
        **filters,
        since=parse_time("since", args.get("since")),
        until=parse_time("until", args.get("until")),
        q=args.get("q") or None,
        owner_email=owner_filter(principal),
        limit=limit,
        cursor=args.get("cursor") or None,
    )


class Api:
    def __init__(self, auth: Authenticator, catalog: Catalog, shared: SharedState) -> None:
        self.auth = auth
        self.catalog = catalog
        self.shared = shared
        self.log = audit.logger()
        # Who has an output search running: one each, as a search reads whole recordings on the
        # catalog's few search threads (recording/catalog.py, SEARCH_THREADS).
        self._searching: set[str] = set()

    def add_to(self, app: web.Application) -> None:
        app.middlewares.append(self.guard)
        app.router.add_get("/api/v1/me", self.me)
        app.router.add_get("/api/v1/sessions", self.list_sessions)
        app.router.add_get("/api/v1/sessions/{id}", self.session)
        app.router.add_get("/api/v1/sessions/{id}/channels/{n}/cast", self.cast)
        app.router.add_get("/api/v1/sessions/{id}/channels/{n}/live", self.live)
        app.router.add_post("/api/v1/sessions/{id}/terminate", self.terminate)

    @web.middleware
    async def guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """401 before anything else, then CSRF for cookie-authenticated changes."""
        if not request.path.startswith("/api/"):
            return await handler(request)  # type: ignore[no-any-return]
        principal = await self.auth.authenticate(request)
        if principal is None:
            raise _error(401, "sign in, or send Authorization: Bearer <ID token>")
        token = request.headers.get("X-CSRF-Token")
        changes = request.method not in ("GET", "HEAD")
        if changes and principal.csrf is not None and not csrf_ok(principal, token):
            raise _error(403, "missing or wrong X-CSRF-Token")
        request[PRINCIPAL_KEY] = principal
        return await handler(request)  # type: ignore[no-any-return]

    async def _allowed_doc(self, request: web.Request) -> tuple[Principal, dict[str, Any]]:
        principal: Principal = request[PRINCIPAL_KEY]
        doc = await self.catalog.document(request.match_info["id"])
        if doc is None:
            raise _error(404, "no such session")
        if not may_view(principal, doc):
            raise _error(403, "not your session")
        return principal, doc

    async def me(self, request: web.Request) -> web.Response:
        p: Principal = request[PRINCIPAL_KEY]
        return web.json_response(
            {"email": p.email, "groups": list(p.groups), "role": p.role, "csrf_token": p.csrf}
        )

    async def list_sessions(self, request: web.Request) -> web.Response:
        principal: Principal = request[PRINCIPAL_KEY]
        query = query_from(request, principal)
        if query.q and principal.email in self._searching:
            raise _error(429, "a search of yours is still running; ask again when it has answered")
        if query.q:
            self._searching.add(principal.email)
        try:
            found, cursor = await self.catalog.query(query)
        except CursorError:
            raise _error(400, "cursor is not one this server handed out") from None
        finally:
            if query.q:
                self._searching.discard(principal.email)
        return web.json_response({"sessions": [summary_json(s) for s in found], "next": cursor})

    async def session(self, request: web.Request) -> web.Response:
        _, doc = await self._allowed_doc(request)
        session_id = request.match_info["id"]
        ok, detail = await self.catalog.verify(session_id)
        channels = []
        for channel in doc.get("channels", []):
            if _has_events(channel):
                events = await self.catalog.events(session_id, int(channel.get("n", 0)), MAX_EVENTS + 1)
                channel = {
                    **channel,
                    "events": events[:MAX_EVENTS],
                    "events_truncated": len(events) > MAX_EVENTS,
                }
            channels.append(channel)
        return web.json_response(
            {
                **doc,
                "channels": channels,
                "decisions": doc.get("decisions", []),
                "verify": {"ok": ok, "detail": detail},
            }
        )

    def _channel(self, request: web.Request, doc: dict[str, Any]) -> int:
        """A terminal channel of the session (cast and live alike), else 404: sftp, forwards and
        scp / rsync transfers (their ``.jsonl``) have no terminal output to show."""
        text = request.match_info["n"]
        n = int(text) if text.isascii() and text.isdigit() and len(text) < 6 else -1
        for channel in doc.get("channels", []):
            if (
                channel.get("n") == n
                and channel.get("kind") in ("shell", "exec")
                and not _has_events(channel)
            ):
                return n
        raise _error(404, "no such terminal channel")

    async def cast(self, request: web.Request) -> web.StreamResponse:
        _, doc = await self._allowed_doc(request)
        n = self._channel(request, doc)
        pieces = self.catalog.cast(request.match_info["id"], n)
        try:
            first = await anext(pieces, b"")
        except NotFound:
            raise _error(404, "no such terminal channel") from None
        response = web.StreamResponse(
            headers={"Content-Type": "application/x-asciicast", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        try:
            await response.write(first)
            async for piece in pieces:
                await response.write(piece)
            await response.write_eof()
        except ConnectionResetError:  # the client stopped the download: nothing to report
            pass
        return response

    async def _active(self, session_id: str) -> bool:
        return any(s.session_id == session_id for s in await self.shared.sessions())

    async def _still_watching(self, request: web.Request, doc: dict[str, Any]) -> bool:
        """The session still runs and the caller may still see it: signed out, a session record
        expired or a bearer token past its ``exp`` ends the stream."""
        if not await self._active(request.match_info["id"]):
            return False
        principal = await self.auth.authenticate(request)
        return principal is not None and may_view(principal, doc)

    async def live(self, request: web.Request) -> web.StreamResponse:
        _, doc = await self._allowed_doc(request)
        n = self._channel(request, doc)
        session_id = request.match_info["id"]
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        queue: asyncio.Queue[OutputChunk | None] = asyncio.Queue(1024)
        loop = asyncio.get_running_loop()
        pump = loop.create_task(self._pump(session_id, queue))
        events = OutputEvents()
        try:
            if not await self._active(session_id):
                await response.write(END)
                return response
            check_at = loop.time() + LIVE_CHECK_S
            while True:
                try:  # due checks come first, even while output flows without a pause
                    chunk = await asyncio.wait_for(queue.get(), max(0.0, check_at - loop.time()))
                except TimeoutError:
                    if not await self._still_watching(request, doc):
                        break
                    await response.write(KEEPALIVE)
                    check_at = loop.time() + LIVE_CHECK_S
                    continue
                if chunk is None:
                    break
                if chunk.channel != n:
                    continue
                if not chunk.data:
                    break
                if event := events.event(chunk.t, chunk.data):
                    await response.write(event)
            await response.write(END)
        except (ConnectionResetError, StateUnavailable):
            pass
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        return response

    async def _pump(self, session_id: str, queue: asyncio.Queue[OutputChunk | None]) -> None:
        """Subscription to the queue; ``None`` when the state layer cannot deliver it."""
        try:
            async for chunk in self.shared.subscribe_output(session_id):
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(chunk)
        except StateUnavailable:
            queue.put_nowait(None)

    async def terminate(self, request: web.Request) -> web.Response:
        principal, _ = await self._allowed_doc(request)
        if not may_terminate(principal):
            raise _error(403, "terminating a session needs an admin group")
        session_id = request.match_info["id"]
        try:
            done = await self.shared.terminate(session_id, principal.email)
        except StateUnavailable:
            raise _error(
                503, "the session may run on another replica and the state store is unavailable"
            ) from None
        if not done:
            raise _error(409, "the session is not active")
        self.log.info("web.terminate", by=principal.email, terminated_session=session_id)
        return web.json_response({"id": session_id, "terminating": True}, status=202)
