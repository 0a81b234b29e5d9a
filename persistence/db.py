"""SQLAlchemy engines with the SQLite settings DESIGN.md measured.

WAL with synchronous=NORMAL commits ~35x faster than the default journal; it can lose
the last commits on power loss (not on a process crash), so SQLITE_SYNCHRONOUS=FULL
is offered. Writers use BEGIN IMMEDIATE (SQLAlchemy's pysqlite recipe): the driver's
default lost updates under concurrency and a plain BEGIN raised "database is locked".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from engine.core.errors import ConfigError

__all__ = [
    "BUSY_TIMEOUT_MS", "is_postgres", "is_sqlite", "make_engine", "masked_url", "normalise_url",
    "sqlite_path",
]

BUSY_TIMEOUT_MS = 10_000


def _dumps(value: Any) -> str:
    # Ops read context with sqlite3: keep "José" readable, not "Jos\u00e9".
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def is_postgres(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def normalise_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3, the driver tertulia ships with
    (SQLAlchemy's default for them is psycopg2, which is not installed)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def masked_url(url: str) -> str:
    """The URL as it may be printed or logged: the password as stars."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable DATABASE_URL>"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for memory and other backends."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def make_engine(url: str, *, synchronous: str = "NORMAL", immediate: bool = True) -> Engine:
    """An engine for the app (`immediate`) or for APScheduler's job store (deferred BEGIN)."""
    path = sqlite_path(url)
    if path is not None and not path.parent.exists():
        raise ConfigError(
            "DATABASE_URL", url, f"a file in an existing folder ({path.parent} is missing)"
        )
    if not is_sqlite(url):
        return _server_engine(url)
    engine = create_engine(
        url, json_serializer=_dumps, pool_size=8, max_overflow=32,
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
    )
    _configure_sqlite(engine, synchronous, "BEGIN IMMEDIATE" if immediate else "BEGIN")
    return engine


def _server_engine(url: str) -> Engine:
    if is_postgres(url):
        _require_psycopg(url)
    # A worker's threads (writer, dispatcher senders, scheduler, scans) each hold a
    # connection at times; 8 + 24 covers them without letting N workers exhaust the
    # server's max_connections (100 by default) at N = 3.
    return create_engine(normalise_url(url), json_serializer=_dumps, pool_pre_ping=True,
                         pool_size=8, max_overflow=24)


def _require_psycopg(url: str) -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ConfigError(
            "DATABASE_URL", masked_url(url),
            "psycopg 3 installed for a PostgreSQL URL (pip install 'tertulia[postgres]')",
        ) from None


def _configure_sqlite(engine: Engine, synchronous: str, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so our BEGIN is the one emitted.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)
