"""What the ops CLI reads: session listings and transcripts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from engine.core.ports import SessionRecord
from persistence.models import messages, session_events, sessions
from persistence.store import SqlStore, session_from_row

__all__ = ["Transcript", "find_open", "list_sessions", "transcript"]


def list_sessions(
    store: SqlStore, *, include_closed: bool = False, phone: str | None = None,
    limit: int = 200,
) -> list[SessionRecord]:
    query = select(sessions).order_by(sessions.c.id.desc()).limit(limit)
    if not include_closed:
        query = query.where(sessions.c.closed_at.is_(None))
    if phone is not None:
        query = query.where(sessions.c.phone == phone)
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
