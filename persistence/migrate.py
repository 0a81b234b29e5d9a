"""Alembic, driven from code: `tertulia db upgrade`, the upgrade on start, the check.

Workers started together on one database must not race their migrations: the upgrade
runs in one transaction that first takes the database's own lock (BEGIN IMMEDIATE on
SQLite, a transaction-scoped advisory lock on PostgreSQL), so the second worker waits,
then finds the schema at head and does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from alembic import command
from engine.core.errors import ConfigError
from persistence.db import is_postgres, make_engine, masked_url

__all__ = [
    "ALEMBIC_DIR", "alembic_config", "current_revision", "downgrade", "head_revision",
    "require_head", "upgrade",
]

# Found relative to the package, so commands work from any working directory.
ALEMBIC_DIR = Path(__file__).resolve().parent.parent / "alembic"
# Any constant: the advisory lock key every tertulia migration takes on PostgreSQL.
_MIGRATION_LOCK = 7_348_201_955


def alembic_config(url: str, connection: Connection | None = None) -> Config:
    config = Config(str(ALEMBIC_DIR.parent / "alembic.ini"))
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.attributes["database_url"] = url
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(url: str, revision: str = "head") -> None:
    _locked(url, lambda config: command.upgrade(config, revision))


def downgrade(url: str, revision: str) -> None:
    _locked(url, lambda config: command.downgrade(config, revision))


def _locked(url: str, run: Callable[[Config], None]) -> None:
    db = make_engine(url)  # BEGIN IMMEDIATE on SQLite: the write lock, for the whole run
    try:
        with db.begin() as conn:
            if is_postgres(url):
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            # Alembic sees a transaction already open and runs inside it (no commit of
            # its own), so the lock is held until every step is in.
            run(alembic_config(url, conn))
    finally:
        db.dispose()


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(url: str) -> str | None:
    db = make_engine(url, immediate=False)
    try:
        with db.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        db.dispose()


def require_head(url: str) -> None:
    """Refuse to run on a schema older (or newer) than this code, in one line."""
    current = current_revision(url)
    head = head_revision(url)
    if current != head:
        found = "not migrated" if current is None else f"at revision {current}"
        raise ConfigError(
            "DATABASE_URL", masked_url(url),
            f"a database at revision {head}; it is {found}: run `tertulia db upgrade`",
        )
