"""Permanent failures: rows end `failed` with the error code, and hold nobody else up.

engine/dispatcher.py records `failure.code or failure.status`: Twilio's error code from
the JSON body when there is one (the fake answers 500 with code 20500, as
`default_error_code(500)`), else the HTTP status.
"""

from __future__ import annotations

import collections

from tests.support.harness import wait_until, whatsapp
from tests.support.trial import UNSENT, text_of

# The outbox's permanent failures, on the embedded SQLite and on PostgreSQL.
E2E_BACKENDS = ("sqlite", "postgres")
PHONES = ("+5491155700001", "+5491155700002", "+5491155700003")


def out_rows(server, phone: str | None = None) -> list[dict]:
    where = "AND s.phone = ?" if phone else ""
    return server.rows(
        "SELECT m.id, m.body, m.status, m.error_code, m.attempts, m.twilio_sid, s.phone "
        "FROM messages m JOIN sessions s ON s.id = m.session_id "
        f"WHERE m.direction = 'out' {where} ORDER BY m.id", (phone,) if phone else ())


def test_always_500_fails_every_row_after_max_attempts(fake, server_factory):
    fake.always(500)
    server = server_factory(env={"OUTBOX_MAX_ATTEMPTS": "3"})
    for phone in PHONES:
        assert server.send(phone, "hola").status_code == 200
    wait_until(lambda: all(r["status"] == "failed" for r in out_rows(server)),
               timeout=30, what="the greetings to fail")
    # The server still takes webhooks while every send fails.
    for phone in PHONES:
        assert server.send(phone, "sí").status_code == 200
    assert server.get("/healthz").status_code == 200
    wait_until(lambda: len(out_rows(server)) == 2 * len(PHONES)
               and all(r["status"] == "failed" for r in out_rows(server)) and not fake.in_flight,
               timeout=30, what="every reply to fail")

    rows = out_rows(server)
    for row in rows:
        assert row["error_code"] == 20500, row
        assert row["attempts"] == 3, row
        assert row["twilio_sid"] is None
    tries = collections.Counter((r.to, r.body) for r in fake.requests)
    assert {tries[(whatsapp(r["phone"]), r["body"])] for r in rows} == {3}
    assert {r.status_code for r in fake.requests} == {500}
    assert not fake.delivered
    log = server.log_text()
    assert log.count("gave up after 3 attempts") == len(rows)
    # The conversation itself moved on: the rows failed, the sessions did not.
    states = {r["state"] for r in server.rows("SELECT state FROM sessions")}
    assert states == {"trial_request"}


def test_permanent_error_does_not_hold_up_the_recipient_or_others(fake, server_factory):
    bad, good = PHONES[0], PHONES[1]
    fake.script_error_for(bad, 400, 21211)  # only bad's first message: invalid 'To'
    server = server_factory(env={"OUTBOX_MAX_ATTEMPTS": "3"})
    assert server.send(bad, "hola").status_code == 200
    wait_until(lambda: out_rows(server, bad) and out_rows(server, bad)[0]["status"] not in UNSENT,
               timeout=15, what="bad's greeting to settle")
    (greeting,) = out_rows(server, bad)
    assert (greeting["status"], greeting["error_code"], greeting["attempts"]) \
        == ("failed", 21211, 1)  # a 4xx fails at once: no retry
    assert server.send(good, "hola").status_code == 200
    assert server.send(bad, "sí").status_code == 200
    fake.wait_for(2, timeout=15)
    assert fake.delivered_to(whatsapp(good)) == [text_of("greeting", saludo_nombre="")]
    # A failed head does not block the recipient's later rows either.
    assert fake.delivered_to(whatsapp(bad)) == [text_of("ask_name")]
    assert "permanent error" in server.log_text()


def test_retrying_recipient_does_not_hold_up_others(fake, server_factory):
    slow, other = PHONES[0], PHONES[2]
    # slow's head fails 8 times; with the backoff that is many seconds of retrying.
    fake.script_for(slow, *[500] * 8)
    server = server_factory(env={"OUTBOX_MAX_ATTEMPTS": "20"})
    assert server.send(slow, "hola").status_code == 200
    wait_until(lambda: [r for r in out_rows(server, slow) if r["attempts"] >= 1],
               timeout=15, what="slow's first failure")
    assert server.send(other, "hola").status_code == 200
    assert server.send(other, "sí").status_code == 200
    fake.wait_for(2, timeout=15)
    assert fake.delivered_to(whatsapp(other)) == [text_of("greeting", saludo_nombre=""),
                                                  text_of("ask_name")]
    # Meanwhile slow's greeting is still backing off, not delivered, not given up.
    (head,) = out_rows(server, slow)
    assert head["status"] == "pending" and 1 <= head["attempts"] < 8, head
    assert head["error_code"] == 20500
    assert fake.delivered_to(whatsapp(slow)) == []
