"""Read-only queries for the CLI and the console channel."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import Integer, and_, false, func, or_, select, text

from engine.core.ports import SessionRecord
from persistence.models import UTCDateTime, sessions
from persistence.store import SqlStore, session_from_row

__all__ = [
    "awaiting_credentials", "close_reason_counts", "latest_session", "next_expiry",
    "open_by_flow", "orphan_jobs",
    "sessions_without_job",
]



def latest_session(store: SqlStore, channel: str, phone: str) -> SessionRecord | None:
    """The open session of a phone, or else its most recent one."""
    query = (
        select(sessions).where(sessions.c.channel == channel, sessions.c.phone == phone)
        .order_by(sessions.c.closed_at.is_not(None), sessions.c.id.desc()).limit(1)
    )
    with store.reading() as conn:
        row = conn.execute(query).first()
    return session_from_row(row) if row is not None else None


def awaiting_credentials(store: SqlStore, states: Mapping[str, str]) -> list[SessionRecord]:
    """Open sessions in their flow's credentials state (`states`: flow name -> state)."""
    c = sessions.c
    waiting = or_(false(), *(and_(c.flow == flow, c.state == state)
                            for flow, state in states.items()))
    query = select(sessions).where(c.closed_at.is_(None), waiting).order_by(c.id)
    with store.reading() as conn:
        return [session_from_row(row) for row in conn.execute(query)]


def sessions_without_job(store: SqlStore, job_prefix: str) -> list[tuple[int, datetime]]:
    """Open sessions that have no timeout job: (id, expires_at)."""
    query = text(
        "SELECT s.id, s.expires_at FROM sessions s "
        "LEFT JOIN apscheduler_jobs j ON j.id = CAST(:prefix AS VARCHAR) || CAST(s.id AS VARCHAR) "
        "WHERE s.closed_at IS NULL AND j.id IS NULL ORDER BY s.expires_at"
    ).columns(id=Integer, expires_at=UTCDateTime)
    with store.reading() as conn:
        return [(int(r.id), r.expires_at) for r in conn.execute(query, {"prefix": job_prefix})]


def orphan_jobs(store: SqlStore, job_prefix: str) -> list[str]:
    """Timeout jobs whose session is closed or gone."""
    # Look the session up by its primary key: a join on `prefix || s.id` can use no
    # index and took 20 ms per job at 100k jobs (bench/RESULTS.md, restart).
    query = text(
        "SELECT j.id FROM apscheduler_jobs j WHERE j.id LIKE :pattern AND NOT EXISTS ("
        "SELECT 1 FROM sessions s WHERE s.id = CAST(substr(j.id, :start) AS INTEGER) "
        "AND s.closed_at IS NULL)"
    )
    with store.reading() as conn:
        params = {"pattern": job_prefix + "%", "start": len(job_prefix) + 1}
        return [str(r.id) for r in conn.execute(query, params)]


def next_expiry(store: SqlStore) -> datetime | None:
    """The earliest expiry of an open session (the partial expiry index's first entry)."""
    with store.reading() as conn:
        value = conn.execute(
            select(func.min(sessions.c.expires_at)).where(sessions.c.closed_at.is_(None))
        ).scalar_one_or_none()
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def close_reason_counts(store: SqlStore) -> dict[str, int]:
    """Closed sessions by close_reason: whatever reasons the rows hold."""
    reason = sessions.c.close_reason
    query = select(reason, func.count()).where(reason.is_not(None)).group_by(reason)
    with store.reading() as conn:
        return {str(r): int(n) for r, n in conn.execute(query)}


def open_by_flow(store: SqlStore) -> list[tuple[str, str | None, str, int]]:
    """Open sessions counted by (flow, flow_version, state), for the start-up warning."""
    c = sessions.c
    query = (select(c.flow, c.flow_version, c.state, func.count())
             .where(c.closed_at.is_(None)).group_by(c.flow, c.flow_version, c.state))
    with store.reading() as conn:
        return [(str(f), v, str(s), int(n)) for f, v, s, n in conn.execute(query)]
