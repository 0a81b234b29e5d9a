"""Health that tells the truth: /healthz fails while the database cannot take a write,
and webhooks then get 503, never a 200 for a message that is not stored.

- read-only and full disk (the faults of test_disk_faults.py): /healthz turns 503 and
  back to 200 once the fault clears, without a restart;
- the database file deleted, or replaced by another file, under the running server:
  writes through the open descriptors would still succeed, into a file nobody reads;
  /healthz and the webhooks answer 503 instead;
- PostgreSQL turned read-only (as a replica after a failover is): the probe's write
  fails and /healthz says so.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from engine.core.clock import SystemClock
from engine.server.health import StorageProbe
from engine.server.writer import Writer
from tests.reliability.test_disk_faults import fault  # noqa: F401  (a fixture)
from tests.support.chat import conversations_on
from tests.support.harness import message_sid, wait_until
from tests.support.stores import SqlBackend

PHONE = "+5491156400001"


def health_code(server) -> int:
    return int(server.get("/healthz").status_code)


def reports(server, words: str) -> bool:
    """/healthz answers 503 and names the write problem."""
    response = server.get("/healthz")
    return response.status_code == 503 and words in str(response.json().get("database"))


def test_healthz_fails_while_the_disk_refuses_writes(fault, fake, server_factory,  # noqa: F811
                                                     tmp_path):
    server = server_factory(db_path=fault.db_path(tmp_path), allow_traceback=True)
    assert server.send(PHONE, "hola").status_code == 200
    fake.wait_for(1)
    assert health_code(server) == 200

    fault.inject(server.db_path)
    try:
        words = "refuses writes" if fault.name == "read-only" else "disk is full"
        wait_until(lambda: reports(server, words), timeout=10,
                   what=f"/healthz to report the {fault.name} fault")
        assert server.send(PHONE, "sí").status_code == 503
    finally:
        fault.clear()
    wait_until(lambda: health_code(server) == 200, timeout=10,
               what="/healthz to recover once the fault cleared")
    assert server.send(PHONE, "sí").status_code == 200


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_deleted_or_replaced_database_file_fails_health_and_webhooks(
    how, fake, server_factory
):
    server = server_factory(allow_traceback=True)
    assert server.send(PHONE, "hola").status_code == 200
    fake.wait_for(1)
    db = server.db_path
    if how == "deleted":
        db.unlink()
    else:
        copy = db.with_name("copy.db")
        shutil.copyfile(db, copy)
        copy.replace(db)  # a restore from backup under the running server

    wait_until(lambda: reports(server, f"{db} was {how}"), timeout=10,
               what=f"/healthz to report the {how} file")
    sid = message_sid()
    # Not a 200 for a message that would go where nobody reads it.
    assert server.send(PHONE, "sí", sid).status_code == 503
    assert server.send(PHONE, "sí", sid).status_code == 503
    assert "webhook not stored" in server.log_text()


def test_the_probe_writes_on_postgresql_and_reports_a_read_only_database(
    sql_backend: SqlBackend
) -> None:
    store = sql_backend.sql_store
    writer = Writer(conversations_on(store, SystemClock()), store)
    writer.start()
    try:
        probe = StorageProbe(writer, store, lambda: datetime.now(UTC), ttl=0.0)
        assert probe.problem() is None
        assert [r[0] for r in sql_backend.raw("SELECT name FROM heartbeats")] == ["health"]
        if sql_backend.name != "postgres":
            return  # SQLite's faults are the file-system ones above
        with store.db.connect() as conn:
            database = conn.execute(text("SELECT current_database()")).scalar_one()
            conn.execute(text(f'ALTER DATABASE "{database}" SET '
                              "default_transaction_read_only = on"))
            conn.commit()
        store.db.dispose()  # new connections, as after a failover to a replica
        problem = probe.problem()
        assert problem is not None and "read-only" in problem
    finally:
        writer.stop()
