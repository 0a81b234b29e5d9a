"""Concurrency: one phone's messages are serialised; many phones at once never lock.

Expected `version` for 50 messages from one phone (engine/unit.py, persistence/store.py):
`create_session` inserts the row with version 1; every transaction that touches a
session writes it back once, in `Work.flush`, with `WHERE version = :read` and
`version = :read + 1`. A "hola" in `greeting` is not understood, so it only renews the
session and re-prompts: one write per message, no second transaction (no credentials).
The first message creates (1) and flushes (2); each of the other 49 adds one: 51.
A lost update (two transactions reading the same version) would show as a smaller
number, or as a StoreError ("changed under us") and a 503.

Misses count in sessions.misses: after three the engine says the options and starts over, so
49 misses leave misses = 49 % 3 = 1, with 16 option texts and 33 re-prompts.
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import ThreadPoolExecutor

from tests.support.harness import message_sid, wait_until, whatsapp
from tests.support.trial import assert_sessions_consistent, text_of

ONE_PHONE = "+5491156000001"
MESSAGES = 50
PHONES = 500
WORKERS = 64


def test_fifty_concurrent_messages_from_one_phone_are_serialised(fake, server_factory):
    # Fifty from one phone at once is past the default rate (30 a minute): this test is
    # about serialising them, so the limit is raised (tests/e2e/test_limits.py has it).
    server = server_factory(env={"RATE_LIMIT_MESSAGES": "1000"})
    barrier = threading.Barrier(MESSAGES, timeout=30)
    sids = [message_sid() for _ in range(MESSAGES)]

    def one(sid: str) -> int:
        barrier.wait()
        return server.send(ONE_PHONE, "hola", sid).status_code

    with ThreadPoolExecutor(MESSAGES) as pool:
        statuses = list(pool.map(one, sids, timeout=60))
    assert statuses == [200] * MESSAGES

    (session,) = server.rows("SELECT * FROM sessions")
    assert session["version"] == 1 + MESSAGES
    assert session["state"] == "greeting" and session["closed_at"] is None
    assert (session["misses"], session["context"]) == (1, "{}")
    rows = server.rows("SELECT id, direction, twilio_sid, body FROM messages ORDER BY id")
    assert {r["twilio_sid"] for r in rows if r["direction"] == "in"} == set(sids)
    # Serialised: every inbound row is followed by exactly its own reply, never by
    # another inbound row first (one transaction per message, one reply per message).
    assert [r["direction"] for r in rows] == ["in", "out"] * MESSAGES
    replies = collections.Counter(r["body"] for r in rows if r["direction"] == "out")
    assert replies == {text_of("greeting", saludo_nombre=""): 1, text_of("options"): 16,
                       text_of("offer_again"): 33}
    events = server.rows("SELECT trigger FROM session_events")
    assert [e["trigger"] for e in events] == ["start"]
    fake.wait_for(MESSAGES, timeout=30)
    assert collections.Counter(fake.delivered_to(whatsapp(ONE_PHONE))) == replies
    assert "database is locked" not in server.log_text()


def test_five_hundred_phones_at_once(fake, server_factory):
    server = server_factory()
    phones = [f"+54911561{i:05d}" for i in range(PHONES)]
    started = threading.Event()

    def one(phone: str) -> int:
        started.wait(30)
        return server.send(phone, "hola").status_code

    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(one, p) for p in phones]
        started.set()
        statuses = collections.Counter(f.result(timeout=120) for f in futures)
    assert statuses == {200: PHONES}

    sessions = assert_sessions_consistent(server.rows)
    assert len(sessions) == PHONES
    assert {s["phone"] for s in sessions} == set(phones)
    assert all(s["closed_at"] is None and s["version"] == 2 for s in sessions)
    inbound = server.rows("SELECT count(*) AS n FROM messages WHERE direction = 'in'")
    assert inbound[0]["n"] == PHONES
    fake.wait_for(PHONES, timeout=60)
    greeting = text_of("greeting", saludo_nombre="")
    wait_until(lambda: not fake.in_flight, timeout=10, what="the fake to be idle")
    assert collections.Counter(r.to for r in fake.delivered) == {whatsapp(p): 1 for p in phones}
    assert {r.body for r in fake.delivered} == {greeting}
    log = server.log_text()
    assert "database is locked" not in log
    assert "storage unavailable" not in log and "not stored" not in log
