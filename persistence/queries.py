"""Read-only queries for the CLI and the console channel."""

from __future__ import annotations

from sqlalchemy import select

from engine.ports import SessionRecord
from persistence.models import sessions
from persistence.store import SqlStore, session_from_row

__all__ = ["latest_session"]



def latest_session(store: SqlStore, channel: str, phone: str) -> SessionRecord | None:
    """The open session of a phone, or else its most recent one."""
    query = (
        select(sessions).where(sessions.c.channel == channel, sessions.c.phone == phone)
        .order_by(sessions.c.closed_at.is_not(None), sessions.c.id.desc()).limit(1)
    )
    with store.reading() as conn:
        row = conn.execute(query).first()
    return session_from_row(row) if row is not None else None
