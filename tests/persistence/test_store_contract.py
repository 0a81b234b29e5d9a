"""The Store port's contract (engine.core.ports.Store / StoreTx), run over every backend.

SQLite always; PostgreSQL when TERTULIA_TEST_POSTGRES_URL points at a scratch database
(its tables are dropped after each test).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from engine.core.errors import StoreError
from engine.core.ports import SessionRecord, Store, StoreTx, TrialRecord
from persistence import migrate, ops
from persistence.db import make_engine
from persistence.store import SqlStore

POSTGRES_URL = os.environ.get("TERTULIA_TEST_POSTGRES_URL", "")
NOW = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
PHONE = "+5491123456789"


@dataclass
class Backend:
    name: str
    url: str
    store: SqlStore

    def raw(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """Rows as ops read them: sqlite3 on the file, or plain SQL on PostgreSQL."""
        if self.name == "sqlite":
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as conn:
                return list(conn.execute(sql, params).fetchall())
        with self.store.db.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(
                not POSTGRES_URL,
                reason="set TERTULIA_TEST_POSTGRES_URL to a scratch PostgreSQL database "
                "URL to run the Store contract on PostgreSQL",
            ),
        ),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else POSTGRES_URL
    if request.param == "postgresql":
        migrate.downgrade(url, "base")  # a scratch database: start from nothing
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        yield Backend(request.param, url, SqlStore(engine))
    finally:
        engine.dispose()
        if request.param == "postgresql":
            migrate.downgrade(url, "base")


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.store


def create(tx: StoreTx, *, channel: str = "whatsapp", phone: str = PHONE,
           context: dict[str, Any] | None = None, now: datetime = NOW) -> SessionRecord:
    return tx.create_session(
        channel=channel, phone=phone, flow="trial", state="greeting", now=now,
        expires_at=now + timedelta(minutes=3), context=context or {},
    )


# -- sessions -----------------------------------------------------------------------------


def test_created_session_reads_back_with_every_field_and_utc_times(store: Store) -> None:
    with store.transaction() as tx:
        created = create(tx, context={"name": "Ana"})
    with store.transaction() as tx:
        found = tx.open_session("whatsapp", PHONE)
        by_id = tx.get_session(created.id)

    assert found == created == by_id
    assert found is not None
    assert (found.channel, found.phone, found.flow, found.state) == (
        "whatsapp", PHONE, "trial", "greeting")
    assert found.started_at == NOW and found.last_inbound_at == NOW
    assert found.expires_at == NOW + timedelta(minutes=3)
    for moment in (found.started_at, found.last_inbound_at, found.expires_at):
        assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)
    assert found.version == 1 and found.context == {"name": "Ana"}
    assert found.closed_at is None and found.close_reason is None and found.is_open


def test_times_in_another_zone_are_stored_as_utc(backend: Backend) -> None:
    local = NOW.astimezone(ZoneInfo("America/Argentina/Buenos_Aires"))
    with backend.store.transaction() as tx:
        created = create(tx, now=local)
    with backend.store.transaction() as tx:
        found = tx.get_session(created.id)
    assert found is not None and found.started_at == NOW
    assert found.started_at.utcoffset() == timedelta(0)
    [(started,)] = backend.raw("SELECT started_at FROM sessions")
    assert str(started).startswith("2026-03-04 05:06:07")


def test_no_open_session_reads_as_none(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.open_session("whatsapp", PHONE) is None
        assert tx.get_session(12345) is None


def test_second_open_session_for_the_same_channel_and_phone_raises_store_error(
    backend: Backend,
) -> None:
    with backend.store.transaction() as tx:
        first = create(tx)
    with pytest.raises(StoreError), backend.store.transaction() as tx:
        create(tx)
    assert backend.raw("SELECT id FROM sessions") == [(first.id,)]


def test_same_phone_on_another_channel_has_its_own_session(store: Store) -> None:
    with store.transaction() as tx:
        on_whatsapp = create(tx, channel="whatsapp")
        on_console = create(tx, channel="console")
    assert on_whatsapp.id != on_console.id
    with store.transaction() as tx:
        assert tx.open_session("whatsapp", PHONE) == on_whatsapp
        assert tx.open_session("console", PHONE) == on_console


def test_a_closed_session_leaves_room_for_a_new_open_one(backend: Backend) -> None:
    with backend.store.transaction() as tx:
        old = create(tx)
        old.state, old.closed_at, old.close_reason = "closed", NOW, "goodbye"
        assert tx.save_session(old, read_version=1)
        new = create(tx)
    with backend.store.transaction() as tx:
        assert tx.open_session("whatsapp", PHONE) == new
    assert backend.raw("SELECT id, close_reason FROM sessions ORDER BY id") == [
        (old.id, "goodbye"), (new.id, None)]


def test_save_session_writes_the_row_and_bumps_the_version(store: Store) -> None:
    with store.transaction() as tx:
        session = create(tx)
    later = NOW + timedelta(minutes=1)
    session.state, session.last_inbound_at = "trial_request", later
    session.expires_at, session.context = later + timedelta(minutes=3), {"name": "José"}
    with store.transaction() as tx:
        assert tx.save_session(session, read_version=1) is True
    assert session.version == 2
    with store.transaction() as tx:
        found = tx.get_session(session.id)
    assert found == session
    assert found is not None and found.version == 2 and found.state == "trial_request"
    assert found.expires_at == later + timedelta(minutes=3)


def test_save_session_with_a_stale_read_version_returns_false_and_writes_nothing(
    store: Store,
) -> None:
    with store.transaction() as tx:
        session = create(tx)
    with store.transaction() as tx:
        winner = tx.get_session(session.id)
        assert winner is not None
        winner.state = "trial_request"
        assert tx.save_session(winner, read_version=1)

    session.state, session.context = "cancelled", {"stale": True}
    with store.transaction() as tx:
        assert tx.save_session(session, read_version=1) is False
    assert session.version == 1  # the caller's record is not bumped either
    with store.transaction() as tx:
        found = tx.get_session(session.id)
    assert found is not None
    assert (found.state, found.version, found.context) == ("trial_request", 2, {})


# -- messages -----------------------------------------------------------------------------


def test_record_inbound_dedupes_on_message_id(backend: Backend) -> None:
    with backend.store.transaction() as tx:
        session = create(tx)
        assert tx.record_inbound(session_id=session.id, channel="whatsapp",
                                 message_id="SM1", body="hola", now=NOW) is True
    with backend.store.transaction() as tx:
        assert tx.record_inbound(session_id=session.id, channel="whatsapp",
                                 message_id="SM1", body="hola otra vez", now=NOW) is False
    assert backend.raw("SELECT twilio_sid, body, direction FROM messages") == [
        ("SM1", "hola", "in")]


def test_record_inbound_without_message_id_is_never_a_duplicate(backend: Backend) -> None:
    with backend.store.transaction() as tx:
        session = create(tx, channel="console")
        for body in ("uno", "dos"):
            assert tx.record_inbound(session_id=session.id, channel="console",
                                     message_id=None, body=body, now=NOW) is True
    assert backend.raw("SELECT body FROM messages WHERE direction = 'in' ORDER BY id") == [
        ("uno",), ("dos",)]


def test_enqueue_returns_increasing_ids_of_pending_outbound_rows(backend: Backend) -> None:
    with backend.store.transaction() as tx:
        session = create(tx)
        ids = [tx.enqueue(session_id=session.id, channel="whatsapp", body=f"texto {i}",
                          now=NOW) for i in range(3)]
    with backend.store.transaction() as tx:
        ids.append(tx.enqueue(session_id=session.id, channel="whatsapp", body="texto 3",
                              now=NOW, redacted="texto ••••"))
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert backend.raw(
        "SELECT id, session_id, direction, status, body, body_redacted, attempts "
        "FROM messages ORDER BY id"
    ) == [
        (ids[0], session.id, "out", "pending", "texto 0", None, 0),
        (ids[1], session.id, "out", "pending", "texto 1", None, 0),
        (ids[2], session.id, "out", "pending", "texto 2", None, 0),
        (ids[3], session.id, "out", "pending", "texto 3", "texto ••••", 0),
    ]


def test_add_event_is_recorded_for_the_audit(backend: Backend) -> None:
    with backend.store.transaction() as tx:
        session = create(tx)
        tx.add_event(session_id=session.id, from_state=None, to_state="greeting",
                     trigger="start", detail="flow trial", at=NOW)
    assert backend.raw("SELECT session_id, from_state, to_state, trigger, detail "
                       "FROM session_events") == [
        (session.id, None, "greeting", "start", "flow trial")]


# -- trials -------------------------------------------------------------------------------


def test_latest_trial_returns_the_most_recently_issued(store: Store) -> None:
    older = TrialRecord(PHONE, "ana1", NOW - timedelta(days=40), NOW - timedelta(days=39))
    newer = TrialRecord(PHONE, "ana2", NOW - timedelta(days=2), NOW - timedelta(days=1))
    other = TrialRecord("+5491199999999", "otro", NOW, NOW + timedelta(days=1))
    with store.transaction() as tx:
        assert tx.latest_trial(PHONE) is None
        sessions = [create(tx, channel=c) for c in ("whatsapp", "console")]
        third = create(tx, phone=other.phone)
        # The newer one is inserted first: the answer must follow issued_at, not the id.
        tx.add_trial(newer, session_id=sessions[0].id)
        tx.add_trial(older, session_id=sessions[1].id)
        tx.add_trial(other, session_id=third.id)
    with store.transaction() as tx:
        assert tx.latest_trial(PHONE) == newer
        assert tx.latest_trial("+5491100000000") is None


# -- transactions -------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_an_exception_rolls_back_every_write_of_the_transaction(backend: Backend) -> None:
    with pytest.raises(Boom), backend.store.transaction() as tx:
        session = create(tx)
        tx.record_inbound(session_id=session.id, channel="whatsapp", message_id="SMx",
                          body="hola", now=NOW)
        tx.enqueue(session_id=session.id, channel="whatsapp", body="¡Hola!", now=NOW)
        tx.add_event(session_id=session.id, from_state=None, to_state="greeting",
                     trigger="start", detail=None, at=NOW)
        raise Boom
    for table in ("sessions", "messages", "session_events", "trials"):
        assert backend.raw(f"SELECT COUNT(*) FROM {table}") == [(0,)], table
    with backend.store.transaction() as tx:
        assert tx.open_session("whatsapp", PHONE) is None
        # The message id was rolled back too, so a retry is not taken for a duplicate.
        session = create(tx)
        assert tx.record_inbound(session_id=session.id, channel="whatsapp",
                                 message_id="SMx", body="hola", now=NOW)


def test_a_store_error_leaves_the_store_usable(store: Store) -> None:
    with store.transaction() as tx:
        create(tx)
    with pytest.raises(StoreError), store.transaction() as tx:
        create(tx)
    with store.transaction() as tx:
        assert tx.open_session("whatsapp", PHONE) is not None


# -- context JSON ---------------------------------------------------------------------------


def test_context_round_trips_and_stays_readable_to_ops(backend: Backend) -> None:
    context = {"name": "José Núñez", "email": "jose@example.com", "misses": 2,
               "warned": True, "tags": ["ñandú", "🎉"], "nested": {"a": None}}
    with backend.store.transaction() as tx:
        created = create(tx, context=context)
    with backend.store.transaction() as tx:
        found = tx.get_session(created.id)
    assert found is not None and found.context == context

    sql = ("SELECT context FROM sessions" if backend.name == "sqlite"
           else "SELECT context::text FROM sessions")
    [(raw,)] = backend.raw(sql)
    assert "José Núñez" in raw and "ñandú" in raw
    assert "\\u00e9" not in raw and "\\u" not in raw


def test_engine_bookkeeping_round_trips_in_plain_columns_apart_from_context(
    backend: Backend,
) -> None:
    flow_context = {"misses": "the flow's own", "warned": ["also the flow's"]}
    with backend.store.transaction() as tx:
        created = create(tx, context=dict(flow_context))
    assert (created.misses, created.warned) == (0, False)
    with backend.store.transaction() as tx:
        session = tx.get_session(created.id)
        assert session is not None and (session.misses, session.warned) == (0, False)
        session.misses = 2
        session.warned = True
        assert tx.save_session(session, read_version=session.version)
    with backend.store.transaction() as tx:
        found = tx.get_session(created.id)
    assert found is not None and (found.misses, found.warned) == (2, True)
    assert found.context == flow_context
    (listed,) = ops.find_open(backend.store, PHONE)  # the ops reads, through the ORM table
    assert (listed.misses, listed.warned, listed.context) == (2, True, flow_context)
    # Plain values ops read with sqlite3 or psql.
    assert [(m, bool(w)) for m, w in backend.raw("SELECT misses, warned FROM sessions")] == [
        (2, True)]


# -- serialisation ----------------------------------------------------------------------------


def test_read_modify_write_through_separate_stores_never_reads_a_stale_version(
    backend: Backend,
) -> None:
    # Two stores on one database stand for two processes (their in-process locks are
    # separate): the database itself must serialise the transactions on a session
    # (BEGIN IMMEDIATE on SQLite, SELECT ... FOR UPDATE on PostgreSQL).
    with backend.store.transaction() as tx:
        session_id = create(tx, context={"count": 0}).id
    other_engine = make_engine(backend.url)
    stores = [backend.store, SqlStore(other_engine)]
    threads, rounds = 4, 25
    barrier = threading.Barrier(threads)
    outcomes: list[object] = []

    def bump(store: SqlStore) -> None:
        barrier.wait()
        for _ in range(rounds):
            try:
                with store.transaction() as tx:
                    session = tx.get_session(session_id)
                    assert session is not None
                    read = session.version
                    session.context["count"] += 1
                    outcomes.append(tx.save_session(session, read_version=read))
            except Exception as exc:
                outcomes.append(exc)

    workers = [threading.Thread(target=bump, args=(stores[i % 2],)) for i in range(threads)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        other_engine.dispose()

    assert [o for o in outcomes if o is not True] == []
    with backend.store.transaction() as tx:
        final = tx.get_session(session_id)
    assert final is not None
    assert final.context == {"count": threads * rounds}
    assert final.version == 1 + threads * rounds
