"""What only ops' SQL sees of the Store port's writes, on every SQL backend.

The port's contract itself (test_store_contract.py) runs on every backend; here are
the rows as ops read them with sqlite3 or psql: times as UTC text, readable JSON, the
columns the port fills in.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from engine.core.ports import StoreTx, TrialRecord
from tests.support.stores import SqlBackend

NOW = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
PHONE = "+5491123456789"


def create(tx: StoreTx, **context: object) -> int:
    return tx.create_session(
        channel="whatsapp", phone=PHONE, flow="trial", state="greeting", now=NOW,
        expires_at=NOW + timedelta(minutes=3), context=dict(context),
    ).id


def test_times_in_another_zone_are_stored_as_utc_text(sql_backend: SqlBackend) -> None:
    local = NOW.astimezone(ZoneInfo("America/Argentina/Buenos_Aires"))
    with sql_backend.store.transaction() as tx:
        tx.create_session(channel="whatsapp", phone=PHONE, flow="trial", state="greeting",
                          now=local, expires_at=local + timedelta(minutes=3), context={})
    [(started, expires)] = sql_backend.raw("SELECT started_at, expires_at FROM sessions")
    assert str(started).startswith("2026-03-04 05:06:07")
    assert str(expires).startswith("2026-03-04 05:09:07")


def test_context_stays_readable_to_ops(sql_backend: SqlBackend) -> None:
    with sql_backend.store.transaction() as tx:
        create(tx, name="José Núñez", tags=["ñandú", "🎉"])
    sql = ("SELECT context FROM sessions" if sql_backend.name == "sqlite"
           else "SELECT context::text FROM sessions")
    [(raw,)] = sql_backend.raw(sql)
    assert "José Núñez" in raw and "ñandú" in raw and "🎉" in raw
    assert "\\u00e9" not in raw and "\\u" not in raw


def test_ops_read_with_plain_sql_what_the_port_wrote(sql_backend: SqlBackend) -> None:
    with sql_backend.store.transaction() as tx:
        session_id = create(tx)
        assert tx.record_inbound(session_id=session_id, channel="whatsapp",
                                 message_id="SM1", body="hola", now=NOW)
        out = tx.enqueue(session_id=session_id, channel="whatsapp", body="Contraseña: x1",
                         now=NOW, redacted="Contraseña: ••••")
        tx.add_event(session_id=session_id, from_state=None, to_state="greeting",
                     trigger="start", detail="flow trial", at=NOW)
        tx.add_trial(TrialRecord(PHONE, "ana1234", NOW, NOW + timedelta(days=1)),
                     session_id=session_id)
    assert sql_backend.raw(
        "SELECT id, channel, phone, flow, state, version, closed_at, close_reason "
        "FROM sessions") == [(session_id, "whatsapp", PHONE, "trial", "greeting", 1, None,
                              None)]
    assert sql_backend.raw(
        "SELECT session_id, direction, twilio_sid, body, body_redacted, status, attempts "
        "FROM messages ORDER BY id") == [
        (session_id, "in", "SM1", "hola", None, "received", 0),
        (session_id, "out", None, "Contraseña: ••••", None, "pending", 0),
    ]
    [(sealed,)] = sql_backend.raw("SELECT body_sealed FROM messages WHERE id = :id", id=out)
    assert "x1" not in sealed and sql_backend.sql_store.sealer.open(sealed) == "Contraseña: x1"
    assert sql_backend.raw("SELECT id FROM messages WHERE direction = 'out'") == [(out,)]
    assert sql_backend.raw("SELECT session_id, from_state, to_state, trigger, detail "
                           "FROM session_events") == [
        (session_id, None, "greeting", "start", "flow trial")]
    assert sql_backend.raw("SELECT phone, username, session_id FROM trials") == [
        (PHONE, "ana1234", session_id)]


class Boom(Exception):
    pass


def test_a_rolled_back_transaction_leaves_no_row_for_ops(sql_backend: SqlBackend) -> None:
    with pytest.raises(Boom), sql_backend.store.transaction() as tx:
        session_id = create(tx)
        tx.record_inbound(session_id=session_id, channel="whatsapp", message_id="SMx",
                          body="hola", now=NOW)
        tx.enqueue(session_id=session_id, channel="whatsapp", body="¡Hola!", now=NOW)
        tx.add_event(session_id=session_id, from_state=None, to_state="greeting",
                     trigger="start", detail=None, at=NOW)
        raise Boom
    for table in ("sessions", "messages", "session_events", "trials"):
        assert sql_backend.raw(f"SELECT COUNT(*) FROM {table}") == [(0,)], table
