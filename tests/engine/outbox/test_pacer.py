"""The shared pacer, on a real SQLite database and a fake clock: TWILIO_MAX_MPS holds
summed over every worker, and a send only leaves while its worker's claim holds."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from engine.core.errors import ClaimLost
from engine.outbox.pacing import SharedPacer
from engine.wiring import Wiring
from persistence import outbox
from persistence.store import SqlStore

SENDER = "whatsapp:+14155238886"


class FakeTime:
    """Epoch seconds that move only when someone sleeps (plus an optional oversleep)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.oversleep = 0.0

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds + self.oversleep
        self.oversleep = 0.0  # a thread that woke late once


def claimed_row(store: SqlStore, worker: str) -> int:
    """An outbound row claimed by `worker`, as the dispatcher's claim leaves it."""
    now = datetime.now(UTC).replace(tzinfo=None)
    with store.transaction() as tx:
        tx.conn.execute(text(
            "INSERT INTO sessions (channel, phone, flow, state, started_at, last_inbound_at, "
            "expires_at, version, context) VALUES ('whatsapp', :phone, 'trial', "
            "'greeting', :now, :now, :now, 1, '{}')"), {"now": now, "phone": f"+54911{worker}"})
        session_id = tx.conn.execute(text("SELECT max(id) FROM sessions")).scalar_one()
        tx.conn.execute(text(
            "INSERT INTO messages (session_id, channel, direction, body, status, attempts, "
            "created_at, claimed_by, claim_until) VALUES (:sid, 'whatsapp', 'out', 'hola', "
            "'sending', 0, :now, :worker, :now)"), {"sid": session_id, "now": now,
                                                   "worker": worker})
        return int(tx.conn.execute(text("SELECT max(id) FROM messages")).scalar_one())


def reserver(store: SqlStore, worker: str, row_id: int) -> Callable[[float, float], float | None]:
    until = datetime.now(UTC) + timedelta(minutes=1)
    return lambda now, interval: store.run(lambda tx: outbox.reserve_slot(
        tx, row_id=row_id, worker=worker, claim_until=until, sender=SENDER, now=now,
        interval=interval))


def busiest_window(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))


def test_two_workers_together_never_exceed_the_rate_in_any_second(wiring: Wiring) -> None:
    clock = FakeTime()
    pacers = []
    for worker in ("w1", "w2"):
        row = claimed_row(wiring.store, worker)
        pacers.append((SharedPacer(10, reserver(wiring.store, worker, row),
                                   clock=clock.time, sleep=clock.sleep), row))
    sent = [pacers[i % 2][0].wait(pacers[i % 2][1]) for i in range(60)]
    assert busiest_window(sent) <= 10
    # Spaced by (1 + slack) / rate: the ceiling is rate / 1.025, not far below the rate.
    assert (sent[-1] - sent[0]) / 59 == pytest.approx(1.025 / 10)


def test_a_send_that_wakes_late_takes_a_new_slot_instead_of_bunching(wiring: Wiring) -> None:
    clock = FakeTime()
    row = claimed_row(wiring.store, "w1")
    pacer = SharedPacer(10, reserve=reserver(wiring.store, "w1", row), clock=clock.time,
                        sleep=clock.sleep)
    first = pacer.wait(row)
    clock.oversleep = 0.05  # the next sleep overshoots by more than the 10 ms allowed
    second = pacer.wait(row)
    # The late slot was given up: the send leaves on a fresh slot, soon enough after it
    # that 15 ms of the slack are left for the request to reach Twilio.
    assert second > first + pacer.interval
    assert second <= clock.now <= second + 0.010
    with wiring.db.connect() as conn:
        next_slot = conn.execute(text("SELECT next_slot FROM send_slots")).scalar_one()
    assert next_slot == pytest.approx(second + pacer.interval)


def test_a_send_whose_claim_was_taken_over_raises_claim_lost(wiring: Wiring) -> None:
    clock = FakeTime()
    row = claimed_row(wiring.store, "w1")
    with wiring.store.transaction() as tx:  # another worker took the row over
        tx.conn.execute(text("UPDATE messages SET claimed_by = 'w2' WHERE id = :id"),
                        {"id": row})
    pacer = SharedPacer(10, reserve=reserver(wiring.store, "w1", row), clock=clock.time,
                        sleep=clock.sleep)
    with pytest.raises(ClaimLost):
        pacer.wait(row)
    with wiring.db.connect() as conn:
        slots = conn.execute(text("SELECT count(*) FROM send_slots")).scalar_one()
    assert slots == 0, "no slot is used up by a send that will not happen"
