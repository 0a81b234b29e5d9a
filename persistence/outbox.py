"""Outbox queries: pending outbound rows, and marking them delivered."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, select, update

from engine.ports import Outbound
from persistence.models import messages, sessions
from persistence.store import SqlStore

__all__ = ["deliver_console"]



def pending_console(store: SqlStore, phone: str) -> list[Outbound]:
    """Pending console rows for one phone, oldest first."""
    query = (
        select(messages.c.id, messages.c.session_id, messages.c.body)
        .join(sessions, sessions.c.id == messages.c.session_id)
        .where(messages.c.status == "pending", messages.c.channel == "console",
               messages.c.direction == "out", sessions.c.phone == phone)
        .order_by(messages.c.id)
    )
    with store.reading() as conn:
        rows = conn.execute(query).all()
    return [Outbound(r.id, r.session_id, "console", phone, r.body) for r in rows]


def mark_sent(store: SqlStore, ids: list[int], *, status: str, now: datetime) -> None:
    """Record delivery; a body that carried a password is replaced by its redacted copy."""
    if not ids:
        return
    with store.transaction() as tx:
        tx.conn.execute(
            update(messages).where(messages.c.id.in_(ids)).values(
                status=status, sent_at=now,
                body=case((messages.c.body_redacted.is_not(None), messages.c.body_redacted),
                          else_=messages.c.body),
                body_redacted=None,
            )
        )


def deliver_console(store: SqlStore, phone: str, now: datetime) -> list[Outbound]:
    """Claim every pending console message for `phone`; the caller prints them."""
    pending = pending_console(store, phone)
    mark_sent(store, [o.id for o in pending], status="delivered", now=now)
    return pending
