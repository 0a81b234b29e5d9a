"""The SQL store: the engine's Store port on SQLAlchemy Core.

Core statements, not ORM sessions, on the per-message path: one transaction per
message runs five or six small statements and nothing else.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine, Row, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from engine.errors import StoreError
from engine.ports import SessionRecord, TrialRecord
from persistence.models import messages, sessions, trials
from persistence.models import session_events as events

__all__ = ["SqlStore", "SqlTx", "session_from_row"]



def session_from_row(row: Row[Any]) -> SessionRecord:
    return SessionRecord(
        id=row.id, channel=row.channel, phone=row.phone, flow=row.flow, state=row.state,
        started_at=row.started_at, last_inbound_at=row.last_inbound_at,
        expires_at=row.expires_at, version=row.version, context=dict(row.context or {}),
        closed_at=row.closed_at, close_reason=row.close_reason,
    )


def _new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


class SqlStore:
    """Serialised write transactions on one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Threads of one process queue here instead of in SQLite's sleeping busy handler.
        self._write_lock = threading.Lock()
        self._insert = sqlite.insert if engine.dialect.name == "sqlite" else postgresql.insert

    @contextmanager
    def transaction(self) -> Iterator[SqlTx]:
        with self._write_lock:
            try:
                with self.engine.begin() as conn:
                    yield SqlTx(conn, self._insert)
            except DBAPIError as exc:
                raise StoreError(f"database error: {exc.orig}") from exc

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only connection for ops queries; it takes no write lock."""
        with self.engine.connect() as conn:
            yield conn


class SqlTx:
    """One transaction; implements engine.ports.StoreTx."""

    def __init__(self, conn: Connection, insert_fn: Any) -> None:
        self.conn, self._insert = conn, insert_fn

    def open_session(self, channel: str, phone: str) -> SessionRecord | None:
        row = self.conn.execute(
            select(sessions).where(
                sessions.c.channel == channel, sessions.c.phone == phone,
                sessions.c.closed_at.is_(None),
            )
        ).first()
        return session_from_row(row) if row is not None else None

    def get_session(self, session_id: int) -> SessionRecord | None:
        row = self.conn.execute(select(sessions).where(sessions.c.id == session_id)).first()
        return session_from_row(row) if row is not None else None

    def create_session(
        self, *, channel: str, phone: str, flow: str, state: str, now: datetime,
        expires_at: datetime, context: dict[str, Any],
    ) -> SessionRecord:
        values = dict(channel=channel, phone=phone, flow=flow, state=state, started_at=now,
                      last_inbound_at=now, expires_at=expires_at, version=1, context=context)
        new_id = _new_id(self.conn.execute(insert(sessions).values(**values)))
        return SessionRecord(id=new_id, **values)  # type: ignore[arg-type]

    def record_inbound(
        self, *, session_id: int, channel: str, message_id: str | None, body: str, now: datetime
    ) -> bool:
        statement = self._insert(messages).values(
            session_id=session_id, channel=channel, direction="in", twilio_sid=message_id,
            body=body, status="received", attempts=0, created_at=now,
        )
        # The unique index on twilio_sid makes the dedupe atomic, even across processes.
        result = self.conn.execute(statement.on_conflict_do_nothing())
        return bool(result.rowcount)

    def save_session(self, record: SessionRecord, *, read_version: int) -> bool:
        result = self.conn.execute(
            update(sessions)
            .where(sessions.c.id == record.id, sessions.c.version == read_version)
            .values(
                state=record.state, last_inbound_at=record.last_inbound_at,
                expires_at=record.expires_at, closed_at=record.closed_at,
                close_reason=record.close_reason, version=read_version + 1,
                context=record.context,
            )
        )
        if result.rowcount != 1:
            return False
        record.version = read_version + 1
        return True

    def add_event(
        self, *, session_id: int, from_state: str | None, to_state: str, trigger: str,
        detail: str | None, at: datetime,
    ) -> None:
        self.conn.execute(insert(events).values(
            session_id=session_id, at=at, from_state=from_state, to_state=to_state,
            trigger=trigger, detail=detail,
        ))

    def enqueue(
        self, *, session_id: int, channel: str, body: str, now: datetime,
        redacted: str | None = None,
    ) -> int:
        result = self.conn.execute(insert(messages).values(
            session_id=session_id, channel=channel, direction="out", body=body,
            body_redacted=redacted, status="pending", attempts=0, created_at=now,
        ))
        return _new_id(result)

    def latest_trial(self, phone: str) -> TrialRecord | None:
        row = self.conn.execute(
            select(trials).where(trials.c.phone == phone)
            .order_by(trials.c.issued_at.desc()).limit(1)
        ).first()
        if row is None:
            return None
        return TrialRecord(row.phone, row.username, row.issued_at, row.expires_at)

    def add_trial(self, trial: TrialRecord, *, session_id: int) -> None:
        self.conn.execute(insert(trials).values(
            phone=trial.phone, username=trial.username, issued_at=trial.issued_at,
            expires_at=trial.expires_at, session_id=session_id,
        ))
