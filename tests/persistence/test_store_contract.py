"""The Store port's contract (engine.core.ports.Store / StoreTx), run over every backend.

The `backend` and `store` fixtures come from the registry in tests/support/stores.py:
SQLite and the in-memory store always, PostgreSQL when TERTULIA_TEST_POSTGRES_URL
points at a scratch database. Rows the port never returns (messages, events) are read
back through `backend.rows`, the same way on every backend; what only ops' SQL can see
is in test_store_sql.py.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from engine.core.choices import Choice
from engine.core.errors import StoreError
from engine.core.ports import SessionRecord, Store, StoreTx, TrialRecord
from persistence import ops
from tests.support.stores import Backend, SqlBackend

NOW = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
PHONE = "+5491123456789"


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


def test_the_engine_bookkeeping_and_the_offered_choices_are_saved(store: Store) -> None:
    offered = (Choice("lun", "Lunes 10:00"), Choice("no", "No, gracias"))
    with store.transaction() as tx:
        session = create(tx)
        session.misses = 2
        session.warned = True
        session.choices = offered
        assert tx.save_session(session, read_version=1)
    with store.transaction() as tx:
        found = tx.get_session(session.id)

    assert found is not None
    assert (found.misses, found.warned, found.choices) == (2, True, offered)


def test_times_in_another_zone_are_stored_as_utc(backend: Backend) -> None:
    local = NOW.astimezone(ZoneInfo("America/Argentina/Buenos_Aires"))
    with backend.store.transaction() as tx:
        created = create(tx, now=local)
    with backend.store.transaction() as tx:
        found = tx.get_session(created.id)
    assert found is not None and found.started_at == NOW
    assert found.started_at.utcoffset() == timedelta(0)
    [(started,)] = backend.select("sessions", "started_at")
    assert started == NOW and started.utcoffset() == timedelta(0)


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
    assert backend.select("sessions", "id") == [(first.id,)]


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
    assert backend.select("sessions", "id", "close_reason") == [
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


def test_the_flow_version_is_stored_at_creation_and_when_saved(backend: Backend) -> None:
    store = backend.store
    with store.transaction() as tx:
        session = tx.create_session(
            channel="whatsapp", phone=PHONE, flow="trial", state="greeting", now=NOW,
            expires_at=NOW + timedelta(minutes=3), context={}, flow_version="v1hash",
        )
    with store.transaction() as tx:
        found = tx.open_session("whatsapp", PHONE)
        assert found is not None and found.flow_version == "v1hash"
        found.flow_version = "v2hash"
        found.misses = 2
        assert tx.save_session(found, read_version=found.version) is True
    with store.transaction() as tx:
        again = tx.get_session(session.id)
    assert again is not None and (again.flow_version, again.misses) == ("v2hash", 2)


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
    assert backend.select("messages", "twilio_sid", "body", "direction") == [
        ("SM1", "hola", "in")]


def test_record_inbound_without_message_id_is_never_a_duplicate(backend: Backend) -> None:
    with backend.store.transaction() as tx:
        session = create(tx, channel="console")
        for body in ("uno", "dos"):
            assert tx.record_inbound(session_id=session.id, channel="console",
                                     message_id=None, body=body, now=NOW) is True
    assert backend.select("messages", "body", "direction") == [("uno", "in"), ("dos", "in")]


def test_enqueue_returns_increasing_ids_of_pending_outbound_rows(backend: Backend) -> None:
    with backend.store.transaction() as tx:
        session = create(tx)
        ids = [tx.enqueue(session_id=session.id, channel="whatsapp", body=f"texto {i}",
                          now=NOW) for i in range(3)]
    with backend.store.transaction() as tx:
        ids.append(tx.enqueue(session_id=session.id, channel="whatsapp", body="texto 3",
                              now=NOW, redacted="texto ••••"))
    assert ids == sorted(ids) and len(set(ids)) == 4
    # A body with a secret is stored redacted; the clear text only sealed.
    assert backend.select(
        "messages", "id", "session_id", "direction", "status", "body", "body_redacted",
        "attempts",
    ) == [
        (ids[0], session.id, "out", "pending", "texto 0", None, 0),
        (ids[1], session.id, "out", "pending", "texto 1", None, 0),
        (ids[2], session.id, "out", "pending", "texto 2", None, 0),
        (ids[3], session.id, "out", "pending", "texto ••••", None, 0),
    ]
    sealed = [row["body_sealed"] for row in backend.rows("messages")]
    assert sealed[:3] == [None] * 3 and "texto 3" not in sealed[3]
    assert backend.store.sealer.open(sealed[3]) == "texto 3"  # type: ignore[attr-defined]


def test_add_event_is_recorded_for_the_audit(backend: Backend) -> None:
    with backend.store.transaction() as tx:
        session = create(tx)
        tx.add_event(session_id=session.id, from_state=None, to_state="greeting",
                     trigger="start", detail="flow trial", at=NOW)
    assert backend.select("session_events", "session_id", "from_state", "to_state", "trigger",
                          "detail", "at") == [
        (session.id, None, "greeting", "start", "flow trial", NOW)]


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
        assert backend.rows(table) == [], table
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
    assert backend.select("sessions", "context") == [(context,)]


def test_edits_to_a_record_read_are_not_stored_until_saved(store: Store) -> None:
    with store.transaction() as tx:
        session = create(tx, context={"name": "Ana"})
        session.state = "trial_request"
        session.context["name"] = "Otra"
    with store.transaction() as tx:
        found = tx.get_session(session.id)
        assert found is not None
        found.context["email"] = "ana@example.com"
    with store.transaction() as tx:
        again = tx.get_session(session.id)
    assert again is not None
    assert (again.state, again.context, again.version) == ("greeting", {"name": "Ana"}, 1)


def test_save_session_of_an_unknown_session_returns_false(store: Store) -> None:
    with store.transaction() as tx:
        session = create(tx)
    ghost = SessionRecord(
        id=session.id + 1000, channel="whatsapp", phone="+5491100000000", flow="trial",
        state="greeting", started_at=NOW, last_inbound_at=NOW, expires_at=NOW, version=1,
    )
    with store.transaction() as tx:
        assert tx.save_session(ghost, read_version=1) is False
        assert tx.get_session(ghost.id) is None
    assert ghost.version == 1


def test_a_message_id_is_a_duplicate_whatever_the_session(backend: Backend) -> None:
    with backend.store.transaction() as tx:
        first = create(tx, phone="+5491100000001")
        second = create(tx, phone="+5491100000002")
        assert tx.record_inbound(session_id=first.id, channel="whatsapp", message_id="SMs",
                                 body="hola", now=NOW)
        assert not tx.record_inbound(session_id=second.id, channel="whatsapp",
                                     message_id="SMs", body="hola", now=NOW)
    assert backend.select("messages", "session_id", "twilio_sid") == [(first.id, "SMs")]


WRITES_FOR_A_SESSION = {
    "record_inbound": lambda tx, sid: tx.record_inbound(
        session_id=sid, channel="whatsapp", message_id="SMo", body="hola", now=NOW),
    "enqueue": lambda tx, sid: tx.enqueue(session_id=sid, channel="whatsapp", body="¡Hola!",
                                          now=NOW),
    "add_event": lambda tx, sid: tx.add_event(session_id=sid, from_state=None,
                                              to_state="greeting", trigger="start",
                                              detail=None, at=NOW),
    "add_trial": lambda tx, sid: tx.add_trial(
        TrialRecord(PHONE, "ana1234", NOW, NOW + timedelta(days=1)), session_id=sid),
}


@pytest.mark.parametrize("write", WRITES_FOR_A_SESSION.values(), ids=WRITES_FOR_A_SESSION)
def test_a_row_for_a_session_that_does_not_exist_raises_store_error(
    backend: Backend, write: Any
) -> None:
    with backend.store.transaction() as tx:
        kept = create(tx)
    with pytest.raises(StoreError), backend.store.transaction() as tx:
        write(tx, kept.id + 1000)
    assert backend.select("sessions", "id") == [(kept.id,)]
    for table in ("messages", "session_events", "trials"):
        assert backend.rows(table) == [], table


def test_a_second_trial_for_one_session_raises_store_error(backend: Backend) -> None:
    trial = TrialRecord(PHONE, "ana1234", NOW, NOW + timedelta(days=1))
    with backend.store.transaction() as tx:
        session = create(tx)
        tx.add_trial(trial, session_id=session.id)
    with pytest.raises(StoreError), backend.store.transaction() as tx:
        tx.add_trial(TrialRecord(PHONE, "ana5678", NOW, NOW + timedelta(days=2)),
                     session_id=session.id)
    assert backend.select("trials", "session_id", "username") == [(session.id, "ana1234")]


# -- savepoints -------------------------------------------------------------------------------


def test_a_savepoint_undoes_only_what_happened_inside_it(backend: Backend) -> None:
    with backend.store.transaction() as tx:
        kept = create(tx)
        assert tx.record_inbound(session_id=kept.id, channel="whatsapp", message_id="SMk",
                                 body="hola", now=NOW)
        with pytest.raises(Boom), tx.savepoint():
            kept.state, kept.closed_at, kept.close_reason = "closed", NOW, "goodbye"
            assert tx.save_session(kept, read_version=1)
            other = create(tx)  # room for it: the first one was just closed
            tx.record_inbound(session_id=other.id, channel="whatsapp", message_id="SMu",
                              body="chau", now=NOW)
            tx.enqueue(session_id=other.id, channel="whatsapp", body="¡Hola!", now=NOW)
            tx.add_event(session_id=other.id, from_state=None, to_state="greeting",
                         trigger="start", detail=None, at=NOW)
            tx.add_trial(TrialRecord(PHONE, "ana1", NOW, NOW), session_id=other.id)
            raise Boom
        # The transaction goes on, on the state from before the savepoint.
        reopened = tx.open_session("whatsapp", PHONE)
        assert reopened is not None and reopened.id == kept.id
        assert (reopened.state, reopened.version, reopened.closed_at) == ("greeting", 1, None)
        assert tx.latest_trial(PHONE) is None
        assert tx.record_inbound(session_id=kept.id, channel="whatsapp", message_id="SMu",
                                 body="chau", now=NOW)
        tx.enqueue(session_id=kept.id, channel="whatsapp", body="después", now=NOW)
    assert backend.select("sessions", "id", "state", "version") == [(kept.id, "greeting", 1)]
    assert backend.select("messages", "session_id", "twilio_sid", "body") == [
        (kept.id, "SMk", "hola"), (kept.id, "SMu", "chau"), (kept.id, None, "después")]
    assert backend.rows("session_events") == [] and backend.rows("trials") == []


def test_writes_in_a_savepoint_that_ends_cleanly_are_kept(backend: Backend) -> None:
    with backend.store.transaction() as tx:
        with tx.savepoint():
            session = create(tx)
            tx.enqueue(session_id=session.id, channel="whatsapp", body="uno", now=NOW)
        with pytest.raises(Boom), tx.savepoint():
            tx.enqueue(session_id=session.id, channel="whatsapp", body="dos", now=NOW)
            raise Boom
        with tx.savepoint():
            tx.enqueue(session_id=session.id, channel="whatsapp", body="tres", now=NOW)
    assert backend.select("messages", "body") == [("uno",), ("tres",)]
    assert backend.select("sessions", "id") == [(session.id,)]


def test_a_store_error_inside_a_savepoint_leaves_the_transaction_usable(
    backend: Backend,
) -> None:
    with backend.store.transaction() as tx:
        first = create(tx)
        with pytest.raises(StoreError), tx.savepoint():
            create(tx)  # a second open session for the same phone
        tx.enqueue(session_id=first.id, channel="whatsapp", body="sigue", now=NOW)
    assert backend.select("sessions", "id") == [(first.id,)]
    assert backend.select("messages", "body") == [("sigue",)]


def test_a_savepoint_does_not_outlive_the_transaction_that_failed(backend: Backend) -> None:
    with pytest.raises(Boom), backend.store.transaction() as tx:
        with tx.savepoint():
            create(tx)
        raise Boom
    assert backend.rows("sessions") == []


def test_engine_bookkeeping_round_trips_in_plain_columns_apart_from_context(
    sql_backend: SqlBackend,
) -> None:
    backend = sql_backend
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
    # A second store on the same data stands for a second process (on SQL backends its
    # in-process lock is separate): the backend itself must serialise the transactions
    # on a session (BEGIN IMMEDIATE on SQLite, SELECT ... FOR UPDATE on PostgreSQL,
    # the one lock in memory).
    with backend.store.transaction() as tx:
        session_id = create(tx, context={"count": 0}).id
    threads, rounds = 4, 25
    barrier = threading.Barrier(threads)
    outcomes: list[object] = []

    def bump(store: Store) -> None:
        barrier.wait()
        for _ in range(rounds):
            try:
                with store.transaction() as tx:
                    session = tx.get_session(session_id)
                    assert session is not None
                    read = session.version
                    time.sleep(0)  # let another thread run between the read and the write
                    session.context["count"] += 1
                    outcomes.append(tx.save_session(session, read_version=read))
            except Exception as exc:
                outcomes.append(exc)

    with backend.other_store() as other:
        stores = [backend.store, other]
        workers = [threading.Thread(target=bump, args=(stores[i % 2],))
                   for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    assert [o for o in outcomes if o is not True] == []
    with backend.store.transaction() as tx:
        final = tx.get_session(session_id)
    assert final is not None
    assert final.context == {"count": threads * rounds}
    assert final.version == 1 + threads * rounds
