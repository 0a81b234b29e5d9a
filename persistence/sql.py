"""Driver-level SQL for the per-message path, in the driver's own parameter style.

Building a SQLAlchemy statement and its cache key costs more than running it on
SQLite; a message runs five or six statements, so the hot path skips that layer.
Values cross here as plain columns: naive UTC times in SQLAlchemy's DateTime format
(so the ORM and sqlite3 read them alike) and JSON text.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Dialect

from engine.core.errors import StoreError

__all__ = ["Driver", "is_transient"]

_NAMED = re.compile(r":(\w+)")
# PostgreSQL errors a retry of the whole transaction may cure: serialization_failure,
# deadlock_detected, lock_not_available.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def is_transient(exc: BaseException) -> bool:
    """Whether a DBAPI error is a conflict between transactions rather than a fault."""
    if getattr(exc, "sqlstate", None) in _TRANSIENT_SQLSTATES:
        return True
    # SQLite's busy timeout ran out while another process held the write lock, or a
    # connection opened during a disk fault is read-only (SqlStore drops the pool).
    return "database is locked" in str(exc) or "readonly database" in str(exc)


class Driver:
    """Runs named-parameter SQL on the connection of an open SQLAlchemy transaction."""

    def __init__(self, dialect: Dialect) -> None:
        self._sqlite = dialect.name == "sqlite"
        self.postgres = dialect.name == "postgresql"
        self._cache: dict[str, str] = {}
        # SQLite serialises writers with BEGIN IMMEDIATE; PostgreSQL needs the row lock.
        self.for_update = "" if self._sqlite else " FOR UPDATE"
        # The database's own clock, for leases shared by workers on several machines; in
        # the format of the DateTime columns (naive UTC), so the two compare.
        self.db_now = ("strftime('%Y-%m-%d %H:%M:%f000', 'now')" if self._sqlite
                       else "(clock_timestamp() AT TIME ZONE 'UTC')")
        # The same, `:seconds` later (a float parameter of the statement).
        self.db_later = (
            "strftime('%Y-%m-%d %H:%M:%f000', 'now', printf('%+.3f seconds', :seconds))"
            if self._sqlite
            else "(clock_timestamp() AT TIME ZONE 'UTC') + make_interval(secs => :seconds)")
        self._errors: type[Exception] = dialect.dbapi.Error  # type: ignore[union-attr]

    def sql(self, text: str) -> str:
        """`:name` placeholders in the driver's style (sqlite3 takes them as they are)."""
        if self._sqlite:
            return text
        cached = self._cache.get(text)
        if cached is None:
            cached = self._cache[text] = _NAMED.sub(r"%(\1)s", text)
        return cached

    def execute(self, conn: Connection, text: str, params: dict[str, Any]) -> Any:
        # The DBAPI cursor itself: SQLAlchemy's pool wrapper around it costs a frame per
        # statement, and a message runs six or seven.
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(self.sql(text), params)
        except self._errors as exc:
            # A refused write (disk full, read-only, a broken constraint) is the store's
            # failure, not the flow's: the engine must not answer it with an apology.
            raise StoreError(f"database error: {exc}", transient=is_transient(exc)) from exc
        return cursor

    def time_out(self, value: datetime | None) -> Any:
        if value is None:
            return None
        if value.tzinfo is not None and value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        naive = value.replace(tzinfo=None)
        # isoformat with a fixed timespec writes what strftime("%Y-%m-%d %H:%M:%S.%f")
        # does, at a third of the cost: it runs five times per message.
        return naive.isoformat(" ", "microseconds") if self._sqlite else naive

    @staticmethod
    def time_in(value: Any) -> datetime | None:
        if value is None:
            return None
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
        assert isinstance(parsed, datetime)
        return parsed.replace(tzinfo=UTC)

    @staticmethod
    def json_out(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    @staticmethod
    def json_in(value: Any) -> dict[str, Any]:
        loaded = json.loads(value) if isinstance(value, str | bytes) else value
        return dict(loaded or {})
