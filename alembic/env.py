"""Alembic environment: the metadata comes from persistence.models, the URL from settings."""

from __future__ import annotations

from typing import Any

from alembic import context
from engine.settings import load_settings
from persistence.db import make_engine
from persistence.models import Base

config = context.config
target_metadata = Base.metadata

# APScheduler owns this table; autogenerate must not try to drop it.
_FOREIGN_TABLES = frozenset({"apscheduler_jobs"})


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    return not (type_ == "table" and name in _FOREIGN_TABLES)


def _url() -> str:
    return str(config.attributes.get("database_url") or load_settings().database_url)


def run_migrations_offline() -> None:
    context.configure(
        url=_url(), target_metadata=target_metadata, literal_binds=True,
        include_object=include_object, render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url(), immediate=False)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection: Any) -> None:
    context.configure(
        connection=connection, target_metadata=target_metadata,
        include_object=include_object, render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
