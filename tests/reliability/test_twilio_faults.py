"""Twilio faults: 30% 500s, 10% 429s and 5% slow answers beyond the client timeout.

Every message to every recipient is eventually delivered, in order per recipient.

The faults come from `support.SeededFaultsFake`: the rates and semantics of
`FakeTwilio.fail_rates`, drawn from one seeded RNG per recipient, so that a
recipient's sequence of outcomes is fixed by SEED whatever the thread timing (with the
shared RNG, which row gets which fault depends on timing, and a rare row with six or
seven failures in a row costs a minute or two of backoff). SEED was picked so that the
run is short and still has every kind of fault, including a slow 201.

A slow answer arrives after TWILIO_HTTP_TIMEOUT_SECONDS: the client gives up
(ReadTimeout, retried) although the fake already accepted the message. If that answer
was a 201, the recipient gets the message twice: once from the slow request, once from
the retry. That duplicate is inherent to a client timeout (Twilio's Messages API takes
no idempotency key); it is counted, printed, and checked against the prediction.
"""

from __future__ import annotations

import collections
import re

import pytest

from tests.support.harness import AUTH_TOKEN, run_threads, wait_until, whatsapp
from tests.support.recipients import SeededFaultsFake
from tests.support.trial import text_of

# The outbox under faults, on the embedded SQLite and on PostgreSQL.
E2E_BACKENDS = ("sqlite", "postgres")
RATES = {"error_500": 0.3, "error_429": 0.1, "slow": 0.05, "slow_seconds": 1.0}
SEED = 180  # 34 requests: 5 x 500, 5 x 429, 1 slow 500, 3 slow 201s (41% faults)
HTTP_TIMEOUT = "0.5"  # < slow_seconds
PHONES = tuple(f"+54911556000{i:02d}" for i in range(4))
CONVERSATION = ("hola", "sí", "{name}", "{bad}", "chau")


def expected_bodies(i: int) -> list[str]:
    name, bad = f"Persona {chr(65 + i)}", f"correo-{i}-sin-arroba"
    return [text_of("greeting", saludo_nombre=""), text_of("ask_name"),
            text_of("ask_email", name=name), text_of("invalid_email", text=bad),
            text_of("goodbye")]


def plan(outcomes: list[tuple[int, bool]], rows: int) -> tuple[list[int], int, int]:
    """(attempts per row, duplicate 201s, longest run of failures) the outcomes imply."""
    attempts, duplicates, run, longest, it = [], 0, 0, 0, iter(outcomes)
    for _ in range(rows):
        tries = 0
        while True:
            status, slow = next(it)
            tries += 1
            if status == 201 and not slow:
                break
            duplicates += status == 201
            run += 1
            longest = max(longest, run)
        run = 0
        attempts.append(tries)
    return attempts, duplicates, longest


@pytest.fixture
def fake():
    twilio = SeededFaultsFake(auth_token=AUTH_TOKEN).start()
    try:
        yield twilio
    finally:
        twilio.stop()


def collapse(bodies: list[str]) -> list[str]:
    """Drop consecutive repeats: a duplicate arrives right before its row's retry."""
    return [b for k, b in enumerate(bodies) if k == 0 or bodies[k - 1] != b]


def test_every_message_delivered_in_order_despite_faults(fake, server_factory):
    fake.recipient_fail_rates(**RATES, seed=SEED)
    predicted = {p: plan(fake.outcomes(whatsapp(p), 200), len(CONVERSATION)) for p in PHONES}
    faults = collections.Counter(o for p in PHONES
                                 for o in fake.outcomes(whatsapp(p), sum(predicted[p][0])))
    # The seed still exercises every fault: 500s, 429s, slow failures and a slow 201.
    assert faults[(500, False)] and faults[(429, False)] and faults[(201, True)]
    server = server_factory(env={"TWILIO_HTTP_TIMEOUT_SECONDS": HTTP_TIMEOUT,
                                 "OUTBOX_MAX_ATTEMPTS": "20"})

    def converse(i: int) -> None:
        name, bad = f"Persona {chr(65 + i)}", f"correo-{i}-sin-arroba"
        for text in CONVERSATION:
            response = server.send(PHONES[i], text.format(name=name, bad=bad))
            assert response.status_code == 200, response.text

    errors = run_threads([lambda i=i: converse(i) for i in range(len(PHONES))], timeout=30)
    assert not errors, errors

    def drained() -> bool:
        unsent = server.rows("SELECT count(*) AS n FROM messages WHERE direction = 'out' "
                             "AND status IN ('pending', 'sending')")[0]["n"]
        return unsent == 0 and fake.in_flight == 0

    wait_until(drained, timeout=90, what="the outbox to drain", interval=0.2)

    requests = fake.requests
    log = server.log_text()
    total_duplicates = 0
    for i, phone in enumerate(PHONES):
        to = whatsapp(phone)
        rows = server.rows(
            "SELECT m.id, m.body, m.status, m.attempts, m.error_code, m.twilio_sid "
            "FROM messages m JOIN sessions s ON s.id = m.session_id "
            "WHERE s.phone = ? AND m.direction = 'out' ORDER BY m.id", (phone,))
        assert [r["body"] for r in rows] == expected_bodies(i)
        for row in rows:
            assert row["status"] == "queued" and row["attempts"] >= 1, row
            seen = [r for r in requests if r.to == to and r.body == row["body"]]
            # Each attempt is one request the fake saw, and exactly one of its 201s is
            # the row's (the one the client heard back from).
            assert row["attempts"] == len(seen), (row, [r.status_code for r in seen])
            assert row["twilio_sid"] in {r.sid for r in seen if r.status_code == 201}
        received = fake.delivered_to(to)
        assert collapse(received) == expected_bodies(i), received
        duplicates = len(received) - len(rows)
        attempts, predicted_duplicates, _ = predicted[phone]
        print(f"\n{phone}: attempts per row {[r['attempts'] for r in rows]} "
              f"(seeded prediction {attempts}), duplicates {duplicates} "
              f"(predicted {predicted_duplicates})")
        total_duplicates += duplicates
    timeouts = len(re.findall(r"failed \(ReadTimeout\); retry", log))
    statuses = collections.Counter(r.status_code for r in requests)
    print(f"twilio faults: {len(requests)} requests {dict(statuses)}, {timeouts} client "
          f"timeouts, duplicate deliveries: {total_duplicates}")
    # A duplicate needs a 201 the client never heard: only a timed-out request.
    assert timeouts >= 1 and total_duplicates <= timeouts
    assert "gave up" not in log
