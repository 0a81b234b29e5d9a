"""The Store backends the contract suite runs over: one registry entry per backend.

`BACKENDS` maps a name to a factory: given the test's tmp_path, a context manager
that yields a ready `Backend` and cleans up after it. The `backend` and `store`
fixtures (tests/support/plugin.py) run each test that asks for them once per entry,
so a new backend is one entry here. "postgres" runs on a fresh database per test on
the server TERTULIA_TEST_POSTGRES_URL names, and skips without it (fails in CI).

A `Backend` also reads back what the port wrote, the same way on every backend
(`rows`, `select`), so contract tests can check rows the port itself never returns.
SQL backends add `raw`: plain SQL, as ops would run it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text

from engine.core.ports import Store
from persistence import migrate
from persistence.db import make_engine
from persistence.memory import MemoryStore
from persistence.models import Base
from persistence.store import SqlStore
from tests.support.postgres import POSTGRES_ENV, scratch_database

__all__ = [
    "BACKENDS",
    "COLUMNS",
    "POSTGRES_ENV",
    "SQL_BACKENDS",
    "Backend",
    "MemoryBackend",
    "SqlBackend",
]


# The columns the Store port writes, by table: what `Backend.rows` returns.
COLUMNS: dict[str, tuple[str, ...]] = {
    "sessions": ("id", "channel", "phone", "flow", "state", "started_at", "last_inbound_at",
                 "expires_at", "version", "context", "closed_at", "close_reason"),
    "messages": ("id", "session_id", "channel", "direction", "twilio_sid", "body",
                 "body_redacted", "body_sealed", "status", "attempts", "created_at"),
    "session_events": ("id", "session_id", "at", "from_state", "to_state", "trigger",
                       "detail"),
    "trials": ("id", "phone", "username", "issued_at", "expires_at", "session_id"),
}


class Backend:
    """One Store implementation under test."""

    name: str
    store: Store

    def rows(self, table: str) -> list[dict[str, Any]]:
        """The committed rows of `table` (a key of COLUMNS) in id order, with times as
        aware UTC datetimes and the context as a dict."""
        raise NotImplementedError

    def select(self, table: str, *columns: str) -> list[tuple[Any, ...]]:
        """`rows(table)`, cut down to `columns`, as tuples."""
        return [tuple(row[c] for c in columns) for row in self.rows(table)]

    def other_store(self) -> AbstractContextManager[Store]:
        """A second store on the same data, as a second process would open it."""
        raise NotImplementedError


class SqlBackend(Backend):
    def __init__(self, name: str, url: str, db: Engine) -> None:
        self.name = name
        self.url = url
        self.sql_store = SqlStore(db)
        self.store = self.sql_store

    def rows(self, table: str) -> list[dict[str, Any]]:
        columns = Base.metadata.tables[table].c
        query = select(*(columns[c] for c in COLUMNS[table])).order_by(columns.id)
        with self.sql_store.reading() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def raw(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """Rows as ops read them: sqlite3 on the file, or plain SQL on PostgreSQL."""
        if self.name == "sqlite":
            with closing(sqlite3.connect(self.url.removeprefix("sqlite:///"))) as conn:
                return list(conn.execute(sql, params).fetchall())
        with self.sql_store.reading() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    @contextmanager
    def other_store(self) -> Iterator[Store]:
        db = make_engine(self.url)
        try:
            yield SqlStore(db)
        finally:
            db.dispose()


class MemoryBackend(Backend):
    def __init__(self) -> None:
        self.name = "memory"
        self.memory = MemoryStore()
        self.store = self.memory

    def rows(self, table: str) -> list[dict[str, Any]]:
        read: dict[str, Callable[[], list[Any]]] = {
            "sessions": self.memory.sessions, "messages": self.memory.messages,
            "session_events": self.memory.events, "trials": self.memory.trials,
        }
        return [{c: getattr(row, c) for c in COLUMNS[table]} for row in read[table]()]

    @contextmanager
    def other_store(self) -> Iterator[Store]:
        yield self.memory  # one process holds the only copy of the data


@contextmanager
def _sql_backend(name: str, url: str) -> Iterator[SqlBackend]:
    db = make_engine(url)
    try:
        yield SqlBackend(name, url, db)
    finally:
        db.dispose()


@contextmanager
def sqlite_backend(tmp_path: Path) -> Iterator[Backend]:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    migrate.upgrade(url)
    with _sql_backend("sqlite", url) as backend:
        yield backend


@contextmanager
def postgres_backend(tmp_path: Path) -> Iterator[Backend]:
    # A fresh, migrated database per test on the server TERTULIA_TEST_POSTGRES_URL names;
    # skipped without one, except in CI, where it fails (tests/support/postgres.py).
    with scratch_database() as url, _sql_backend("postgres", url) as backend:
        yield backend


@contextmanager
def memory_backend(tmp_path: Path) -> Iterator[Backend]:
    yield MemoryBackend()


BackendFactory = Callable[[Path], AbstractContextManager[Backend]]

BACKENDS: dict[str, BackendFactory] = {
    "sqlite": sqlite_backend,
    "memory": memory_backend,
    "postgres": postgres_backend,
}
# The backends ops read with SQL: the SQL-only tests run over these.
SQL_BACKENDS = ("sqlite", "postgres")
