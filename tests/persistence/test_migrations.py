"""Migrations match the models, run both ways, ignore APScheduler's table, and the
SQLite connections carry the settings DESIGN.md asks for."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, Table

from persistence import migrate
from persistence.db import make_engine
from persistence.models import Base

APP_TABLES = {"sessions", "messages", "session_events", "trials", "leases", "send_slots",
              "inbound_rates", "heartbeats"}
# APScheduler's table is created by a migration (never at start), but stays APScheduler's.
MIGRATED_TABLES = APP_TABLES | {"apscheduler_jobs"}
# The variables tertulia reads; a subprocess gets none of them from the test's own env.
SETTINGS_VARS = {
    "DATABASE_URL", "FLOWS_DIR", "DEFAULT_FLOW", "SESSION_TIMEOUT_MINUTES",
    "SESSION_WARNING_SECONDS", "SWEEP_INTERVAL_SECONDS", "STATS_INTERVAL_MINUTES",
    "TRIAL_DURATION_HOURS", "TRIAL_COOLDOWN_DAYS", "CREDENTIAL_PROVIDER", "INTENT_DETECTOR",
    "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_WHATSAPP_FROM", "PUBLIC_BASE_URL",
    "TWILIO_API_BASE_URL", "TWILIO_HTTP_TIMEOUT_SECONDS", "OUTBOX_MAX_ATTEMPTS",
    "TWILIO_MAX_MPS", "LOG_LEVEL", "LOG_FORMAT", "SQLITE_SYNCHRONOUS",
}
APSCHEDULER_DDL = (
    "CREATE TABLE apscheduler_jobs (id VARCHAR(191) NOT NULL PRIMARY KEY, "
    "next_run_time FLOAT, job_state BLOB NOT NULL)"
)


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """The rule of alembic/env.py (which cannot be imported: it runs on import)."""
    return not (type_ == "table" and name == "apscheduler_jobs")


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tertulia.db'}"


def db_file(url: str) -> str:
    return url.removeprefix("sqlite:///")


def tables(path: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        found = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
    return {name for (name,) in found}


def diffs(url: str, metadata: MetaData) -> list[Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"include_object": include_object, "compare_type": True,
                            "compare_server_default": True},
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(migrate.alembic_config(url)).get_current_head()


def current_revision(path: str) -> str | None:
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


# -- (a) the migrations build exactly the models ---------------------------------------------


def test_upgraded_database_has_no_autogenerate_diff_against_the_models(url: str) -> None:
    migrate.upgrade(url)
    assert diffs(url, Base.metadata) == []


def test_autogenerate_comparison_does_report_a_model_the_migrations_lack(url: str) -> None:
    # Guards the test above: the comparison is live, not silenced by include_object.
    migrate.upgrade(url)
    metadata = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    Table("not_migrated", metadata, Column("id", Integer, primary_key=True))
    found = diffs(url, metadata)
    assert [(d[0], d[1].name) for d in found] == [("add_table", "not_migrated")]


# -- (b) upgrade -> downgrade -> upgrade -------------------------------------------------


def test_upgrade_downgrade_upgrade_round_trip_leaves_the_app_tables(url: str) -> None:
    path = db_file(url)
    migrate.upgrade(url)
    assert tables(path) >= APP_TABLES
    assert current_revision(path) == head_revision(url)

    migrate.downgrade(url, "base")
    assert tables(path) & APP_TABLES == set()
    assert current_revision(path) is None

    migrate.upgrade(url)
    assert tables(path) - {"alembic_version"} == MIGRATED_TABLES
    assert current_revision(path) == head_revision(url)
    assert diffs(url, Base.metadata) == []


def test_upgrade_is_idempotent_on_an_upgraded_database(url: str) -> None:
    migrate.upgrade(url)
    migrate.upgrade(url)
    assert current_revision(db_file(url)) == head_revision(url)


# -- (c) APScheduler's own table is not ours -----------------------------------------------


def test_apscheduler_jobs_table_is_not_reported_as_a_diff(url: str) -> None:
    migrate.upgrade(url)
    assert "apscheduler_jobs" in tables(db_file(url))
    assert diffs(url, Base.metadata) == []


def test_apscheduler_jobs_table_survives_a_downgrade_and_upgrade(url: str) -> None:
    migrate.upgrade(url)
    with sqlite3.connect(db_file(url)) as conn:
        conn.execute("INSERT INTO apscheduler_jobs VALUES ('timeout:1', 1.0, x'00')")
    migrate.downgrade(url, "base")
    migrate.upgrade(url)
    with sqlite3.connect(db_file(url)) as conn:
        assert conn.execute("SELECT id FROM apscheduler_jobs").fetchall() == [("timeout:1",)]


# -- (d) `tertulia db upgrade`, from any working directory -----------------------------------


def run_cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARS}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=cwd, env={**clean, **env},
        capture_output=True, text=True, check=False, timeout=120,
    )


def test_db_upgrade_command_creates_the_tables_from_outside_the_repo(tmp_path: Path) -> None:
    elsewhere = tmp_path / "ops-home"
    elsewhere.mkdir()
    path = tmp_path / "cli.db"
    result = run_cli(elsewhere, "db", "upgrade", DATABASE_URL=f"sqlite:///{path}")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert tables(str(path)) - {"alembic_version"} == MIGRATED_TABLES
    assert current_revision(str(path)) == head_revision(f"sqlite:///{path}")


def test_db_upgrade_command_puts_a_relative_database_in_the_working_directory(
    tmp_path: Path,
) -> None:
    result = run_cli(tmp_path, "db", "upgrade", DATABASE_URL="sqlite:///relative.db")
    assert result.returncode == 0, result.stderr
    assert tables(str(tmp_path / "relative.db")) >= APP_TABLES


# -- (e) the SQLite settings on every connection -------------------------------------------


def pragmas(url: str, **kwargs: Any) -> dict[str, Any]:
    engine = make_engine(url, **kwargs)
    try:
        with engine.connect() as conn:
            return {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
    finally:
        engine.dispose()


def test_sqlite_connections_use_wal_normal_sync_busy_timeout_and_foreign_keys(
    url: str,
) -> None:
    found = pragmas(url)
    assert (found["journal_mode"], found["synchronous"], found["foreign_keys"]) == ("wal", 1, 1)
    assert found["busy_timeout"] >= 5000


def test_sqlite_synchronous_full_is_offered(url: str) -> None:
    found = pragmas(url, synchronous="FULL")
    assert found["synchronous"] == 2
    assert found["journal_mode"] == "wal" and found["foreign_keys"] == 1


def test_job_store_engine_with_deferred_begin_has_the_same_pragmas(url: str) -> None:
    found = pragmas(url, immediate=False)
    assert (found["journal_mode"], found["synchronous"], found["foreign_keys"]) == ("wal", 1, 1)
    assert found["busy_timeout"] >= 5000


def test_upgrade_moves_stored_timeout_jobs_to_the_new_job_path(url: str) -> None:
    """A job stored before the layout change still fires after the upgrade: APScheduler
    deletes a job whose function it cannot import."""
    import pickle
    from datetime import UTC, datetime, timedelta

    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    from engine.scheduling.timeouts import FIRE

    migrate.upgrade(url, "0002")
    with sqlite3.connect(db_file(url)) as conn:
        conn.execute(APSCHEDULER_DDL)
    old = make_engine(url, immediate=False)
    scheduler = BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(engine=old)},
                                    timezone="UTC")
    # A paused scheduler stores jobs without resolving them to run.
    scheduler.start(paused=True)
    scheduler.add_job("engine.scheduling.timeouts:fire", "date", args=[7], id="timeout:7",
                      run_date=datetime.now(UTC) + timedelta(hours=1))
    scheduler.shutdown(wait=False)
    with old.begin() as conn:  # what the old code stored: the old module path
        state = pickle.loads(
            conn.exec_driver_sql("SELECT job_state FROM apscheduler_jobs").scalar_one())
        state["func"] = "engine.timeouts:fire"
        conn.exec_driver_sql("UPDATE apscheduler_jobs SET job_state = ?",
                             (pickle.dumps(state),))
    old.dispose()

    migrate.upgrade(url)
    db = make_engine(url, immediate=False)
    try:
        jobs = SQLAlchemyJobStore(engine=db).get_all_jobs()
    finally:
        db.dispose()
    assert [(job.id, job.func_ref, job.args) for job in jobs] == [("timeout:7", FIRE, (7,))]


def test_upgrade_moves_the_engine_bookkeeping_out_of_open_sessions_context(url: str) -> None:
    """0004: `misses` and `warned` leave `context` for columns of their own, so a flow's
    keys can never collide with them; a downgrade puts them back."""
    import json

    path = db_file(url)
    migrate.upgrade(url, "0003")
    insert = ("INSERT INTO sessions (channel, phone, flow, state, started_at, "
              "last_inbound_at, expires_at, closed_at, close_reason, version, context) "
              "VALUES ('whatsapp', ?, 'trial', ?, '2026-01-01 10:00:00.000000', "
              "'2026-01-01 10:00:00.000000', '2026-01-01 10:03:00.000000', ?, ?, 3, ?)")
    with sqlite3.connect(path) as conn:
        conn.execute(insert, ("+5491100000001", "trial_request", None, None,
                              '{"name":"José","misses":2,"warned":true}'))
        conn.execute(insert, ("+5491100000002", "greeting", None, None, '{"misses":1}'))
        conn.execute(insert, ("+5491100000003", "closed", "2026-01-01 10:01:00.000000",
                              "goodbye", '{"misses":1}'))

    migrate.upgrade(url)

    def read() -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as conn:
            return conn.execute("SELECT phone, context, misses, warned FROM sessions "
                                "ORDER BY id").fetchall()

    assert read() == [
        ("+5491100000001", '{"name":"José"}', 2, 1),
        ("+5491100000002", "{}", 1, 0),
        ("+5491100000003", '{"misses":1}', 0, 0),  # history stays as it was written
    ]
    assert diffs(url, Base.metadata) == []

    migrate.downgrade(url, "0003")
    with sqlite3.connect(path) as conn:
        contexts = [json.loads(c) for (c,) in conn.execute(
            "SELECT context FROM sessions ORDER BY id")]
        columns = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
    assert contexts == [{"name": "José", "misses": 2, "warned": True}, {"misses": 1},
                        {"misses": 1}]
    assert not columns & {"misses", "warned"}
