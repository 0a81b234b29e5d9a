"""Writes gathered and sent together: the overdue scan's many timeouts on PostgreSQL.

One timeout is three writes (the session, its event, its notice) and each is a round
trip to a server; a scan of a hundred overdue sessions paid seven hundred of them and
closed about 200 sessions a second. Here the scan reads and locks its sessions in one
statement (`lock_overdue`), the engine runs each timeout against a `DeferredTx`, and
the writes leave as one batch per table (psycopg sends an executemany as a pipeline).

It is only for sessions this transaction holds locked (their conversation's advisory
lock, then the row), so a version check cannot fail: `save_session` answers True, and
`flush` still refuses if the database saw otherwise.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.core.errors import StoreError
from engine.core.ports import SessionRecord
from persistence.sql import is_transient
from persistence.store import SqlTx

__all__ = ["DeferredTx"]

_UPDATE = (
    "UPDATE sessions SET state = %(state)s, last_inbound_at = %(last_inbound_at)s, "
    "expires_at = %(expires_at)s, closed_at = %(closed_at)s, close_reason = %(close_reason)s, "
    "version = %(new_version)s, context = %(context)s, misses = %(misses)s, "
    "warned = %(warned)s WHERE id = %(id)s AND version = %(read_version)s"
)
_EVENT = (
    "INSERT INTO session_events (session_id, at, from_state, to_state, trigger, detail) "
    "VALUES (%(session_id)s, %(at)s, %(from_state)s, %(to_state)s, %(trigger)s, %(detail)s)"
)
_MESSAGE = (
    "INSERT INTO messages (id, session_id, channel, direction, body, body_redacted, status, "
    "attempts, created_at) VALUES (%(id)s, %(session_id)s, %(channel)s, 'out', %(body)s, "
    "%(redacted)s, 'pending', 0, %(now)s)"
)


class DeferredTx(SqlTx):
    """A SqlTx on PostgreSQL whose session, event and outbox writes wait for `flush`."""

    def __init__(self, tx: SqlTx) -> None:
        super().__init__(tx.conn, tx.driver)
        self._updates: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self._messages: list[dict[str, Any]] = []
        self._ids: list[int] = []

    def mark(self) -> tuple[int, int, int]:
        return len(self._updates), len(self._events), len(self._messages)

    def undo(self, mark: tuple[int, int, int]) -> None:
        """Forget what was gathered since `mark`: a timeout whose flow step failed."""
        del self._updates[mark[0]:]
        del self._events[mark[1]:]
        del self._messages[mark[2]:]

    def reserve_ids(self, count: int) -> None:
        """Take outbox ids from the sequence ahead, in one round trip."""
        cursor = self.execute(
            "SELECT nextval(pg_get_serial_sequence('messages', 'id')) "
            "FROM generate_series(1, :count)", count=count)
        self._ids.extend(int(row[0]) for row in cursor.fetchall())

    def save_session(self, record: SessionRecord, *, read_version: int) -> bool:
        d = self.driver
        self._updates.append({
            "state": record.state, "last_inbound_at": d.time_out(record.last_inbound_at),
            "expires_at": d.time_out(record.expires_at), "closed_at": d.time_out(record.closed_at),
            "close_reason": record.close_reason, "new_version": read_version + 1,
            "context": d.json_out(record.context), "misses": record.misses,
            "warned": record.warned, "id": record.id, "read_version": read_version,
        })
        record.version = read_version + 1
        return True

    def add_event(
        self, *, session_id: int, from_state: str | None, to_state: str, trigger: str,
        detail: str | None, at: datetime,
    ) -> None:
        self._events.append({
            "session_id": session_id, "at": self.driver.time_out(at), "from_state": from_state,
            "to_state": to_state, "trigger": trigger, "detail": detail,
        })

    def enqueue(
        self, *, session_id: int, channel: str, body: str, now: datetime,
        redacted: str | None = None,
    ) -> int:
        if not self._ids:
            self.reserve_ids(16)
        message_id = self._ids.pop(0)
        self._messages.append({
            "id": message_id, "session_id": session_id, "channel": channel, "body": body,
            "redacted": redacted, "now": self.driver.time_out(now),
        })
        return message_id

    def flush(self) -> None:
        """Send what was gathered: one executemany per table."""
        cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            if self._updates:
                cursor.executemany(_UPDATE, self._updates)
                if cursor.rowcount != len(self._updates):
                    raise StoreError(f"overdue scan: {len(self._updates)} session(s) to close, "
                                     f"{cursor.rowcount} updated; another writer moved one")
            if self._events:
                cursor.executemany(_EVENT, self._events)
            if self._messages:
                cursor.executemany(_MESSAGE, self._messages)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"database error: {exc}", transient=is_transient(exc)) from exc
        finally:
            cursor.close()
        self._updates.clear()
        self._events.clear()
        self._messages.clear()
