"""Scratch PostgreSQL databases for the tests, on the server TERTULIA_TEST_POSTGRES_URL
names (`.ci/postgres.sh` starts one and sets it).

Without it the PostgreSQL tests skip, except in CI (CI set), where they fail: nothing
PostgreSQL-specific may be skipped there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from persistence import migrate
from persistence.db import normalise_url

__all__ = ["POSTGRES_ENV", "require_server", "rows", "scratch_database"]

POSTGRES_ENV = "TERTULIA_TEST_POSTGRES_URL"


def require_server() -> str:
    """The server's URL, or a skip (a failure under CI) naming how to get one."""
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return normalise_url(url)
    why = (f"set {POSTGRES_ENV} to a PostgreSQL server URL (`source .ci/postgres.sh` "
           "starts a throwaway one)")
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests must run in CI: {why}", pytrace=False)
    pytest.skip(why)


@contextmanager
def scratch_database(*, migrated: bool = True) -> Iterator[str]:
    """A fresh database on the test server, dropped afterwards; yields its URL."""
    server = require_server()
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
        if migrated:
            migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def rows(url: str, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """What ops would read with psql (named `:params`)."""
    db = create_engine(url)
    try:
        with db.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql), params or {})]
    finally:
        db.dispose()
