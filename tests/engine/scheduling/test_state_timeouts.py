"""Per-state timeouts (Flow.timeouts) with the real APScheduler job store on SQLite.

The booking flow's `confirming` state sends a reminder after two minutes and moves to
`held`, which times out (closes) a minute later; other states keep SESSION_TIMEOUT.
As in test_timeouts_unit, the scheduler is paused and the test fires jobs by hand at
FakeClock times.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from engine.core.clock import FakeClock
from engine.core.flow import BASE_TEXTS
from engine.core.ports import Fence, Inbound
from engine.scheduling.timeouts import Timeouts, job_id, sweep
from engine.wiring import Wiring
from persistence.db import make_engine
from persistence.models import sessions
from tests.support.booking import flows_folder
from tests.support.wiring import rows

PHONE = "+5491123456789"
DEFAULT = timedelta(minutes=30)
REMINDER = "¿Seguís ahí? Te guardo la mesa de las 21:00 un minuto más."


class Rig:
    def __init__(self, wiring: Wiring, timeouts: Timeouts, clock: FakeClock) -> None:
        self.wiring = wiring
        self.timeouts = timeouts
        self.clock = clock
        self._count = 0

    def send(self, *texts: str) -> list[str]:
        said = []
        for text in texts:
            self._count += 1
            inbound = Inbound(channel="whatsapp", phone=PHONE, text=text,
                              message_id=f"SMst{self._count:04d}")
            said += [o.body for o in self.wiring.conversations.handle(inbound)]
        return said

    def session(self) -> dict[str, Any]:
        return rows(self.wiring, "SELECT * FROM sessions WHERE phone = :p ORDER BY id DESC "
                    "LIMIT 1", p=PHONE)[0]

    def expires_at(self) -> datetime:
        with self.wiring.store.reading() as conn:
            return conn.execute(select(sessions.c.expires_at)
                                .where(sessions.c.id == self.session()["id"])).scalar_one()

    def job_time(self) -> datetime | None:
        job = self.timeouts.scheduler.get_job(job_id(self.session()["id"]))
        return None if job is None else job.next_run_time.astimezone(UTC)

    def fire(self, after: timedelta) -> list[str]:
        """Let `after` pass, fire the session's job, and return what the user received."""
        before = self.outbound()
        self.clock.advance(after)
        self.timeouts.on_fire(self.session()["id"])
        return self.outbound()[len(before):]

    def outbound(self) -> list[str]:
        return [r["body"] for r in rows(
            self.wiring, "SELECT body FROM messages WHERE direction = 'out' ORDER BY id")]


@pytest.fixture
def clock() -> FakeClock:
    """A day ahead of the wall clock APScheduler reads: only the test fires jobs."""
    return FakeClock((datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0))


@pytest.fixture
def make_rig(
    tmp_path: Path, clock: FakeClock, make_wiring: Callable[..., Wiring]
) -> Iterator[Callable[..., Rig]]:
    started: list[tuple[Timeouts, Any]] = []

    def factory(fence: Callable[[], Fence | None] | None = None) -> Rig:
        wiring = make_wiring(FLOWS_DIR=str(flows_folder(tmp_path)), DEFAULT_FLOW="booking",
                             SESSION_TIMEOUT_MINUTES="30")
        jobs_db = make_engine(wiring.settings.database_url, immediate=False)
        timeouts = Timeouts(wiring.conversations, jobs_db, fence=fence)
        wiring.conversations.subscribe(timeouts.on_commit)
        timeouts.start(run_jobs=False)
        started.append((timeouts, jobs_db))
        return Rig(wiring, timeouts, clock)

    yield factory
    for timeouts, jobs_db in started:
        timeouts.shutdown()
        jobs_db.dispose()


def test_states_without_a_timeout_of_their_own_keep_session_timeout(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.send("hola", "4")

    assert rig.session()["state"] == "asking_hour"
    assert rig.expires_at() == rig.clock.now() + DEFAULT


def test_a_state_timeout_sends_a_reminder_moves_on_and_the_next_state_closes(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.send("hola", "4", "21:00")
    # The job moved from SESSION_TIMEOUT to the state's two minutes, sooner.
    assert rig.job_time() == rig.clock.now() + timedelta(minutes=2)

    assert rig.fire(timedelta(minutes=2)) == [REMINDER]
    assert rig.session()["state"] == "held"
    assert rig.session()["closed_at"] is None
    assert rig.job_time() == rig.clock.now() + timedelta(minutes=1)

    assert rig.fire(timedelta(minutes=1)) == [BASE_TEXTS["timeout_notice"]]
    assert (rig.session()["state"], rig.session()["close_reason"]) == ("timeout", "timeout")


def test_a_message_before_the_state_timeout_renews_it_and_the_early_job_does_nothing(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.send("hola", "4", "21:00")
    rig.clock.advance(timedelta(minutes=1))
    rig.send("mmm")  # not understood: still confirming, the clock starts again

    assert rig.fire(timedelta(minutes=1)) == []
    assert rig.session()["state"] == "confirming"
    assert rig.job_time() == rig.clock.now() + timedelta(minutes=1)
    assert rig.fire(timedelta(minutes=1)) == [REMINDER]


def test_an_overdue_state_timeout_with_no_job_is_fired_by_the_sweep(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.send("hola", "4", "21:00")
    rig.timeouts.disarm(rig.session()["id"])  # as if a crash lost the job
    rig.clock.advance(timedelta(minutes=3))

    assert sweep(rig.timeouts, rig.wiring.store)[0] == 1
    assert rig.outbound()[-1] == REMINDER
    assert rig.session()["state"] == "held"


def test_a_state_timeout_fired_without_the_lease_does_nothing(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture,
) -> None:
    stale = Fence(name="scheduler", holder="a worker that froze", token=7)
    rig = make_rig(fence=lambda: stale)
    rig.send("hola", "4", "21:00")

    with caplog.at_level(logging.ERROR, logger="tertulia.timeouts"):
        assert rig.fire(timedelta(minutes=2)) == []
    assert rig.session()["state"] == "confirming"
    assert "LeaseLost" in caplog.text
