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

from engine.core import choices as offers
from engine.core.errors import StoreError
from engine.core.ports import SessionRecord
from persistence.sql import is_transient
from persistence.store import (
    ADD_EVENT,
    ENQUEUE_WITH_ID,
    SAVE_SESSION,
    SqlTx,
    enqueue_params,
    save_params,
)

__all__ = ["DeferredTx"]


class DeferredTx(SqlTx):
    """A SqlTx on PostgreSQL whose session, event and outbox writes wait for `flush`."""

    def __init__(self, tx: SqlTx) -> None:
        super().__init__(tx.conn, tx.driver, tx.sealer)
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
        self._updates.append(save_params(self.driver, record, read_version))
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
        redacted: str | None = None, key: str | None = None,
        choices: tuple[offers.Choice, ...] = (),
    ) -> int:
        if not self._ids:
            self.reserve_ids(16)
        message_id = self._ids.pop(0)
        params = enqueue_params(self.driver, self.sealer, session_id=session_id,
                                channel=channel, body=body, now=now, redacted=redacted, key=key,
                                choices=choices)
        self._messages.append({"id": message_id, **params})
        return message_id

    def flush(self) -> None:
        """Send what was gathered: one executemany per table."""
        d = self.driver
        cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            if self._updates:
                cursor.executemany(d.sql(SAVE_SESSION), self._updates)
                if cursor.rowcount != len(self._updates):
                    raise StoreError(f"overdue scan: {len(self._updates)} session(s) to close, "
                                     f"{cursor.rowcount} updated; another writer moved one")
            if self._events:
                cursor.executemany(d.sql(ADD_EVENT), self._events)
            if self._messages:
                cursor.executemany(d.sql(ENQUEUE_WITH_ID), self._messages)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"database error: {exc}", transient=is_transient(exc)) from exc
        finally:
            cursor.close()
        self._updates.clear()
        self._events.clear()
        self._messages.clear()
