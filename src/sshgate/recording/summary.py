"""A session as a sessions list shows it (DESIGN §10 list fields), the list's filters and its
cursor. Pure: documents and queries in, summaries and decisions out."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
from dataclasses import dataclass
from typing import Any

from sshgate.recording.recorder import SESSION_ID


@dataclass(frozen=True, slots=True)
class ChannelSummary:
    n: int
    kind: str
    """``shell``, ``exec``, ``sftp`` or ``forward``."""


@dataclass(frozen=True, slots=True)
class SessionSummary:
    id: str
    user: str
    """The email (or a machine identity's name)."""
    identity: str
    """``idp:<provider>:<type>:<email>``."""
    resource: str
    native_user: str
    client_ip: str
    status: str
    started: datetime.datetime
    ended: datetime.datetime | None
    channels: tuple[ChannelSummary, ...]


@dataclass(frozen=True, slots=True)
class SessionQuery:
    user: str | None = None
    resource: str | None = None
    native_user: str | None = None
    status: str | None = None
    since: datetime.datetime | None = None
    """Sessions that started at or after this."""
    until: datetime.datetime | None = None
    """Sessions that started before this."""
    q: str | None = None
    """Text in the terminal output, as ``recordings search`` finds it."""
    owner_email: str | None = None
    """Set for role ``user``: only sessions whose identity's email is this, whichever provider."""
    limit: int = 50
    cursor: str | None = None


class CursorError(ValueError):
    """A cursor this catalog did not hand out."""


SortKey = tuple[datetime.datetime, str]


def sort_key(summary: SessionSummary) -> SortKey:
    """Newest first is this key descending; the id breaks ties, so the order is total."""
    return summary.started, summary.id


def parse_time(value: Any) -> datetime.datetime:
    """An RFC 3339 time (UTC when it names no zone); ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    parsed = datetime.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def rfc3339(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def summarize(doc: dict[str, Any], session_id: str) -> SessionSummary:
    """The list fields of an (upgraded, reader.upgrade) session.json found in directory
    ``session_id``; ValueError when it names another session or has no usable start time."""
    if doc.get("id") != session_id or not SESSION_ID.fullmatch(session_id):
        raise ValueError(f"names session {doc.get('id')!r}, not its directory {session_id!r}")
    raw_channels = doc.get("channels")
    channels = tuple(
        ChannelSummary(c["n"], _text(c.get("kind")))
        for c in (raw_channels if isinstance(raw_channels, list) else [])
        if isinstance(c, dict) and type(c.get("n")) is int
    )
    ended = doc.get("ended")
    return SessionSummary(
        id=session_id,
        user=_text(doc.get("user")),
        identity=_text(doc.get("identity")),
        resource=_text(doc.get("resource")),
        native_user=_text(doc.get("native_user")),
        client_ip=_text(doc.get("client_ip")),
        status=_text(doc.get("status")),
        started=parse_time(doc.get("started")),
        ended=parse_time(ended) if ended else None,
        channels=channels,
    )


def identity_email(identity: str) -> str:
    """The name part of ``idp:<provider>:<type>:<name>``, or "" for anything else."""
    parts = identity.split(":", 3)
    return parts[3] if len(parts) == 4 and parts[0] == "idp" else ""


def normalized(query: SessionQuery) -> SessionQuery:
    """Empty texts as no filter (``?user=``), times without a zone as UTC."""
    texts: dict[str, Any] = {
        name: getattr(query, name) or None
        for name in ("user", "resource", "native_user", "status", "q", "cursor")
    }
    times: dict[str, Any] = {
        name: value.replace(tzinfo=datetime.UTC) if value.tzinfo is None else value
        for name in ("since", "until")
        if (value := getattr(query, name)) is not None
    }
    return dataclasses.replace(query, **texts, **times)


def matches(summary: SessionSummary, query: SessionQuery) -> bool:
    """Every filter of ``query`` but ``q`` (which reads the recording) holds."""
    exact = (
        (query.user, summary.user),
        (query.resource, summary.resource),
        (query.native_user, summary.native_user),
        (query.status, summary.status),
    )
    if any(wanted is not None and wanted != value for wanted, value in exact):
        return False
    if query.since is not None and summary.started < query.since:
        return False
    if query.until is not None and summary.started >= query.until:
        return False
    if query.owner_email is not None:
        email = identity_email(summary.identity)
        return bool(email) and email.casefold() == query.owner_email.casefold()
    return True


def encode_cursor(key: SortKey) -> str:
    """Where the next page starts: after this session in the newest-first order, whatever
    sessions start meanwhile (they sort before it)."""
    started, session_id = key
    text = f"{started.astimezone(datetime.UTC).isoformat()}|{session_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> SortKey:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        started, session_id = text.split("|")
        key = (parse_time(started), session_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise CursorError("not a cursor of this listing") from None
    if not SESSION_ID.fullmatch(session_id) or len(cursor) > 300:
        raise CursorError("not a cursor of this listing")
    return key
