"""The overdue scan, the safety net every worker runs: it closes what is past due in
batches, once each, on both backends (on PostgreSQL with gathered writes,
persistence/deferred.py), and leaves alone a conversation another transaction holds."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from engine.core.clock import FakeClock
from engine.core.ports import Inbound
from engine.server.worker import Worker
from tests.support.stores import SqlBackend
from tests.support.wiring import make_settings

PHONES = [f"+5491150{n:04d}" for n in range(7)]


@pytest.fixture
def clock() -> FakeClock:
    # A day ahead of the wall clock APScheduler reads: no job of this test fires by itself.
    return FakeClock((datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0))


@pytest.fixture
def worker(tmp_path: Path, sql_backend: SqlBackend, clock: FakeClock) -> Iterator[Worker]:
    settings = make_settings(tmp_path, DATABASE_URL=sql_backend.url, SESSION_TIMEOUT_MINUTES="3")
    made = Worker(settings, clock=clock)
    made.writer.start()
    made.timeouts.start(run_jobs=False)  # jobs are written, never run
    yield made
    made.timeouts.shutdown()
    made.writer.stop()
    made.wiring.close()


def _rows(worker: Worker, sql: str) -> list[dict[str, Any]]:
    with worker.store.reading() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql))]


def _open(worker: Worker, phones: list[str]) -> dict[str, int]:
    for phone in phones:
        worker.conversations.handle(Inbound("whatsapp", phone, "hola"))
    return {r["phone"]: r["id"] for r in _rows(worker, "SELECT id, phone FROM sessions")}


def test_the_scan_closes_every_overdue_session_once_with_its_notice_event_and_no_job_left(
    worker: Worker, clock: FakeClock,
) -> None:
    ids = _open(worker, PHONES)
    assert {r["id"] for r in _rows(worker, "SELECT id FROM apscheduler_jobs")} == {
        f"timeout:{i}" for i in ids.values()}
    clock.advance(timedelta(minutes=3, seconds=1))

    assert worker.writer.expire_overdue().result(timeout=30) == len(PHONES)
    assert worker.writer.expire_overdue().result(timeout=30) == 0, "each closes once"

    closed = _rows(worker, "SELECT state, close_reason, closed_at, version FROM sessions")
    assert {(r["state"], r["close_reason"]) for r in closed} == {("timeout", "timeout")}
    assert {r["version"] for r in closed} == {3}, "one write each: opened, greeted, closed"
    notices = _rows(worker, "SELECT session_id, body, status FROM messages WHERE direction = "
                            "'out' AND body LIKE '%por inactividad%' ORDER BY id")
    assert sorted(n["session_id"] for n in notices) == sorted(ids.values())
    assert {n["status"] for n in notices} == {"pending"}, "queued in the outbox"
    events = _rows(worker, "SELECT session_id, trigger, to_state FROM session_events "
                           "WHERE trigger = 'expire'")
    assert sorted(e["session_id"] for e in events) == sorted(ids.values())
    assert _rows(worker, "SELECT id FROM apscheduler_jobs") == [], "the scan dropped its jobs"
    # The outbox ids came from the table's own sequence: new rows keep coming after them.
    worker.conversations.handle(Inbound("whatsapp", PHONES[0], "hola otra vez"))
    assert len(_rows(worker, "SELECT id FROM messages")) == len(
        {r["id"] for r in _rows(worker, "SELECT id FROM messages")})


def test_a_session_not_yet_due_is_left_open(worker: Worker, clock: FakeClock) -> None:
    _open(worker, PHONES[:2])
    clock.advance(timedelta(minutes=2))
    worker.conversations.handle(Inbound("whatsapp", PHONES[1], "sigo acá"))
    clock.advance(timedelta(minutes=1, seconds=30))

    assert worker.writer.expire_overdue().result(timeout=30) == 1
    by_phone = {r["phone"]: r["close_reason"] for r in
                _rows(worker, "SELECT phone, close_reason FROM sessions")}
    assert by_phone == {PHONES[0]: "timeout", PHONES[1]: None}


# SQLite has one writer at a time: no conversation is ever held apart from the scan.
@pytest.mark.parametrize("sql_backend", ["postgres"], indirect=True)
def test_a_conversation_another_worker_holds_is_skipped_then_closed_once_it_is_free(
    worker: Worker, clock: FakeClock, sql_backend: SqlBackend,
) -> None:
    ids = _open(worker, PHONES[:3])
    clock.advance(timedelta(minutes=3, seconds=1))
    other = create_engine(sql_backend.url)
    try:
        with other.begin() as conn:
            # What a message batch of another worker holds for that phone.
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                         {"k": f"whatsapp:{PHONES[1]}"})
            assert worker.writer.expire_overdue().result(timeout=30) == 2
            held = _rows(worker, f"SELECT close_reason FROM sessions WHERE id = {ids[PHONES[1]]}")
            assert held == [{"close_reason": None}]
        assert worker.writer.expire_overdue().result(timeout=30) == 1
    finally:
        other.dispose()
    assert {r["close_reason"] for r in _rows(worker, "SELECT close_reason FROM sessions")} == {
        "timeout"}
    notices = _rows(worker, f"SELECT count(*) AS n FROM messages WHERE session_id = "
                            f"{ids[PHONES[1]]} AND body LIKE '%por inactividad%'")
    assert notices == [{"n": 1}]
