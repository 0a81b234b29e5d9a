"""What the ops CLI reads: session listings and transcripts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from engine.core.ports import SessionRecord
from persistence.models import messages, session_events, sessions
from persistence.store import SqlStore, session_from_row

__all__ = ["OutMessage", "Transcript", "find_open", "list_sessions", "outbound", "transcript"]


def list_sessions(
    store: SqlStore, *, include_closed: bool = False, phone: str | None = None,
    limit: int = 200, state: str | None = None, flow: str | None = None,
    close_reason: str | None = None,
) -> list[SessionRecord]:
    """Newest first; a close reason implies closed sessions."""
    s = sessions.c
    query = select(sessions).order_by(s.id.desc()).limit(limit)
    if not include_closed and close_reason is None:
        query = query.where(s.closed_at.is_(None))
    for column, value in ((s.phone, phone), (s.state, state), (s.flow, flow),
                          (s.close_reason, close_reason)):
        if value is not None:
            query = query.where(column == value)
    with store.reading() as conn:
        return [session_from_row(r) for r in conn.execute(query)]


def find_open(store: SqlStore, phone: str) -> list[SessionRecord]:
    """Open sessions of a phone, on any channel."""
    query = select(sessions).where(sessions.c.phone == phone, sessions.c.closed_at.is_(None))
    with store.reading() as conn:
        return [session_from_row(r) for r in conn.execute(query)]


@dataclass(frozen=True)
class Transcript:
    session: SessionRecord
    messages: list[dict[str, Any]]
    events: list[dict[str, Any]]


def transcript(store: SqlStore, session_id: int) -> Transcript | None:
    with store.reading() as conn:
        row = conn.execute(select(sessions).where(sessions.c.id == session_id)).first()
        if row is None:
            return None
        m = messages.c
        said = conn.execute(
            select(m.id, m.direction, m.body, m.body_redacted, m.status, m.error_code,
                   m.attempts, m.created_at, m.sent_at)
            .where(m.session_id == session_id).order_by(m.id)
        ).mappings().all()
        events = conn.execute(
            select(session_events).where(session_events.c.session_id == session_id)
            .order_by(session_events.c.id)
        ).mappings().all()
    return Transcript(session_from_row(row), [dict(r) for r in said], [dict(e) for e in events])


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One outbound row as ops see it: never a password (the redacted copy wins)."""

    id: int
    session_id: int
    channel: str
    phone: str
    status: str
    error_code: int | None
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    body: str


def outbound(
    store: SqlStore, *, statuses: Sequence[str] = (), limit: int = 50
) -> list[OutMessage]:
    """The newest outbound rows, of the given statuses (all when empty)."""
    m = messages.c
    query = (
        select(m.id, m.session_id, m.channel, sessions.c.phone, m.status, m.error_code,
               m.attempts, m.created_at, m.sent_at,
               func.coalesce(m.body_redacted, m.body).label("shown"))
        .join(sessions, sessions.c.id == m.session_id)
        .where(m.direction == "out").order_by(m.id.desc()).limit(limit)
    )
    if statuses:
        query = query.where(m.status.in_(list(statuses)))
    with store.reading() as conn:
        return [OutMessage(r.id, r.session_id, r.channel, r.phone, r.status, r.error_code,
                           r.attempts, r.created_at, r.sent_at, r.shown)
                for r in conn.execute(query)]
