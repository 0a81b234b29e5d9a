"""Timeout jobs in process: the real SQLite file, APScheduler and its SQLAlchemyJobStore.

The scheduler is started paused (as a process that does not hold the scheduler lock),
so jobs are written to `apscheduler_jobs` exactly as in production but never run on
their own: the test fires them by hand with `Timeouts.on_fire`, at FakeClock times.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from engine.core.clock import FakeClock
from engine.core.ports import Inbound
from engine.scheduling.timeouts import FIRE, Timeouts, job_id, sweep
from engine.server.worker import Worker
from engine.wiring import Wiring
from persistence.db import make_engine
from persistence.models import sessions
from tests.support.wiring import make_settings, rows

PHONE = "+5491123456789"
OTHER = "+5491198765432"
THIRD = "+5491155554444"
# No intent in `greeting`: a re-prompt, and the session stays open there.
IDLE = "mmm"
NOTICE = "Cerramos tu sesión por inactividad"
TIMEOUT = timedelta(minutes=3)


class Rig:
    """An engine, its paused scheduler, and helpers to talk and to read what ops read."""

    def __init__(self, wiring: Wiring, timeouts: Timeouts, clock: FakeClock) -> None:
        self.wiring, self.timeouts, self.clock = wiring, timeouts, clock
        self._count = 0

    def send(self, phone: str = PHONE, body: str = IDLE) -> list[str]:
        self._count += 1
        inbound = Inbound(channel="whatsapp", phone=phone, text=body,
                          message_id=f"SMunit{self._count:06d}")
        return [o.body for o in self.wiring.conversations.handle(inbound)]

    def session(self, phone: str = PHONE) -> dict[str, Any]:
        return rows(self.wiring, "SELECT * FROM sessions WHERE phone = :p ORDER BY id DESC "
                    "LIMIT 1", p=phone)[0]

    def expires_at(self, session_id: int) -> datetime:
        with self.wiring.store.reading() as conn:  # through the UTC column type
            return conn.execute(select(sessions.c.expires_at)
                                .where(sessions.c.id == session_id)).scalar_one()

    def jobs(self) -> dict[str, float]:
        return {r["id"]: r["next_run_time"] for r in
                rows(self.wiring, "SELECT id, next_run_time FROM apscheduler_jobs")}

    def outbound(self, session_id: int) -> list[str]:
        return [r["body"] for r in rows(
            self.wiring, "SELECT body FROM messages WHERE session_id = :i AND direction = "
            "'out' ORDER BY id", i=session_id)]

    def events(self, session_id: int) -> list[tuple[str, str]]:
        return [(r["trigger"], r["to_state"]) for r in rows(
            self.wiring, "SELECT trigger, to_state FROM session_events WHERE session_id = :i "
            "ORDER BY id", i=session_id)]


@pytest.fixture
def clock() -> FakeClock:
    """A day ahead of the wall clock, which APScheduler reads: no job is ever due for it,
    so only the test fires jobs (a paused scheduler still looks for due jobs once as it
    shuts down)."""
    return FakeClock((datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0))


@pytest.fixture
def make_rig(
    tmp_path: Path, clock: FakeClock, make_wiring: Callable[..., Wiring]
) -> Iterator[Callable[..., Rig]]:
    started: list[tuple[Timeouts, Any]] = []

    def factory(*, warning: timedelta | None = None, rearm_on_message: bool = False) -> Rig:
        env = {"SESSION_WARNING_SECONDS": f"{warning.total_seconds():g}"} if warning else {}
        wiring = make_wiring(**env)
        jobs_db = make_engine(wiring.settings.database_url, immediate=False)
        timeouts = Timeouts(wiring.conversations, jobs_db, warning=warning,
                            rearm_on_message=rearm_on_message)
        wiring.conversations.subscribe(timeouts.on_commit)
        timeouts.start(run_jobs=False)
        started.append((timeouts, jobs_db))
        return Rig(wiring, timeouts, clock)

    yield factory
    for timeouts, jobs_db in started:
        timeouts.shutdown()
        jobs_db.dispose()


def test_arm_stores_a_date_job_named_after_the_session_with_a_stable_function_path(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.send(body="hola")
    session = rig.session()
    expires = rig.expires_at(session["id"])
    assert expires == rig.clock.now() + TIMEOUT

    stored = rows(rig.wiring, "SELECT id, next_run_time FROM apscheduler_jobs")
    assert [r["id"] for r in stored] == [f"timeout:{session['id']}"]
    assert stored[0]["next_run_time"] == pytest.approx(expires.timestamp(), abs=1e-3)

    job = rig.timeouts.scheduler.get_job(job_id(session["id"]))
    assert job is not None
    assert job.func_ref == FIRE == "engine.scheduling.timeouts:fire"
    assert list(job.args) == [session["id"]] and not job.kwargs
    assert job.trigger.run_date == expires
    assert job.misfire_grace_time is None and job.coalesce is True


def test_a_job_that_fires_early_rearms_at_the_new_expiry_and_does_not_close(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.send(body="hola")
    sid = rig.session()["id"]
    first_expiry = rig.expires_at(sid)

    rig.clock.advance(timedelta(minutes=1))
    rig.send()  # renews the row; by default the job is not touched
    renewed = rig.expires_at(sid)
    assert renewed == first_expiry + timedelta(minutes=1)
    assert rig.jobs()[job_id(sid)] == pytest.approx(first_expiry.timestamp(), abs=1e-3)
    version = rig.session()["version"]

    rig.clock.advance(timedelta(minutes=2))  # the job's original due time
    rig.timeouts.on_fire(sid)

    session = rig.session()
    assert session["closed_at"] is None and session["state"] == "greeting"
    assert session["version"] == version, "an early fire must not write the session"
    assert not any(NOTICE in body for body in rig.outbound(sid))
    assert rig.jobs()[job_id(sid)] == pytest.approx(renewed.timestamp(), abs=1e-3)
    assert rig.timeouts.scheduler.get_job(job_id(sid)).trigger.run_date == renewed

    rig.clock.advance(timedelta(minutes=1))  # now the renewed expiry is due
    # APScheduler deletes a date job from the store as it hands it to the executor.
    rig.timeouts.scheduler.remove_job(job_id(sid))
    rig.timeouts.on_fire(sid)
    session = rig.session()
    assert (session["state"], session["close_reason"]) == ("timeout", "timeout")
    assert [b for b in rig.outbound(sid) if NOTICE in b] == [
        "Cerramos tu sesión por inactividad. Escribinos cuando quieras para empezar de nuevo."
    ]
    assert job_id(sid) not in rig.jobs(), "a closed session is not re-armed"


def test_a_stale_expire_after_a_renewal_never_closes(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.send(body="hola")
    sid = rig.session()["id"]
    rig.clock.advance(TIMEOUT - timedelta(milliseconds=1))
    rig.send()  # lands one millisecond before expiry
    renewed = rig.expires_at(sid)
    version = rig.session()["version"]

    rig.clock.advance(timedelta(milliseconds=1))  # the old expiry: a stale wake-up
    assert rig.wiring.conversations.expire(sid) == renewed

    session = rig.session()
    assert session["closed_at"] is None and session["version"] == version
    assert ("expire", "timeout") not in rig.events(sid)
    assert not any(NOTICE in body for body in rig.outbound(sid))

    # Once the renewed expiry is due, expire closes exactly once; a second call is a no-op.
    rig.clock.advance(renewed - rig.clock.now())
    assert rig.wiring.conversations.expire(sid) is None
    assert rig.wiring.conversations.expire(sid) is None
    assert rig.events(sid).count(("expire", "timeout")) == 1
    assert sum(NOTICE in b for b in rig.outbound(sid)) == 1


def test_the_closing_update_is_guarded_by_the_version_read(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig()
    rig.send(body="hola")
    sid = rig.session()["id"]
    with rig.wiring.store.transaction() as tx:
        stale = tx.get_session(sid)
    assert stale is not None
    rig.clock.advance(timedelta(seconds=10))
    rig.send()  # a message renews it: version moves on
    stale.state, stale.closed_at, stale.close_reason = "timeout", rig.clock.now(), "timeout"
    with rig.wiring.store.transaction() as tx:
        assert tx.save_session(stale, read_version=stale.version) is False
    session = rig.session()
    assert session["closed_at"] is None and session["state"] == "greeting"


def test_sweep_expires_a_due_session_without_job_rearms_one_not_due_and_drops_orphans(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture,
) -> None:
    rig = make_rig()
    rig.send(PHONE, "hola")
    due = rig.session(PHONE)["id"]
    rig.clock.advance(timedelta(minutes=2))
    rig.send(OTHER, "hola")
    later = rig.session(OTHER)["id"]
    rig.send(THIRD, "hola")
    closed = rig.session(THIRD)["id"]
    rig.wiring.conversations.close(closed, notify=False)
    assert set(rig.jobs()) == {job_id(due), job_id(later)}

    # Drift, as a kill -9 leaves it: two open sessions lose their jobs, and two jobs
    # point at a closed session and at one that never existed.
    with rig.wiring.db.begin() as conn:
        conn.execute(text("DELETE FROM apscheduler_jobs"))
    rig.timeouts.arm(closed, rig.clock.now() + TIMEOUT)
    rig.timeouts.arm(9999, rig.clock.now() + TIMEOUT)
    assert set(rig.jobs()) == {job_id(closed), job_id(9999)}

    rig.clock.advance(timedelta(minutes=1, seconds=30))  # `due` is past expiry; `later` not
    with caplog.at_level(logging.INFO, logger="tertulia.timeouts"):
        assert sweep(rig.timeouts, rig.wiring.store) == (1, 1, 2)

    assert (rig.session(PHONE)["state"], rig.session(PHONE)["close_reason"]) == (
        "timeout", "timeout")
    assert sum(NOTICE in b for b in rig.outbound(due)) == 1
    assert rig.session(OTHER)["closed_at"] is None
    assert set(rig.jobs()) == {job_id(later)}
    assert rig.timeouts.scheduler.get_job(job_id(later)).trigger.run_date == \
        rig.expires_at(later)
    sweeps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sweep:")]
    assert sweeps == ["sweep: expired 1 session(s) with no job, re-armed 1, removed 2 orphan "
                      "job(s)"]

    # Nothing left to repair: a second sweep changes nothing and logs nothing.
    caplog.clear()
    assert sweep(rig.timeouts, rig.wiring.store) == (0, 0, 0)
    assert not [r for r in caplog.records if r.getMessage().startswith("sweep:")]


@pytest.mark.parametrize("mode", ["self", "message"])
def test_timeout_rearm_setting_decides_whether_each_message_moves_the_job(
    tmp_path: Path, clock: FakeClock, mode: str,
) -> None:
    service = Worker(make_settings(tmp_path, TIMEOUT_REARM=mode), clock=clock)
    service.timeouts.start(run_jobs=False)
    try:
        rig = Rig(service.wiring, service.timeouts, clock)
        rig.send(body="hola")
        sid = rig.session()["id"]
        first = rig.expires_at(sid)
        for _ in range(3):
            clock.advance(timedelta(seconds=40))
            rig.send()
        renewed = rig.expires_at(sid)
        assert renewed == first + timedelta(seconds=120)
        expected = renewed if mode == "message" else first
        assert rig.jobs()[job_id(sid)] == pytest.approx(expected.timestamp(), abs=1e-3)
        assert service.timeouts.scheduler.get_job(job_id(sid)).trigger.run_date == expected
    finally:
        service.stop()


def test_a_warning_wakes_the_job_early_and_a_reply_clears_it(
    make_rig: Callable[..., Rig],
) -> None:
    warning = timedelta(seconds=30)
    rig = make_rig(warning=warning)
    rig.send(body="hola")
    sid = rig.session()["id"]
    expires = rig.expires_at(sid)
    assert rig.timeouts.scheduler.get_job(job_id(sid)).trigger.run_date == expires - warning

    rig.clock.advance(TIMEOUT - warning)
    rig.timeouts.on_fire(sid)  # the warning: the job moves to the expiry itself
    said = rig.outbound(sid)
    assert sum(b.startswith("¿Seguís ahí?") for b in said) == 1
    assert rig.session()["closed_at"] is None
    assert (rig.session()["warned"], rig.session()["context"]) == (1, "{}")
    assert rig.timeouts.scheduler.get_job(job_id(sid)).trigger.run_date == expires
    rig.timeouts.on_fire(sid)  # a repeated early wake-up does not warn twice
    assert sum(b.startswith("¿Seguís ahí?") for b in rig.outbound(sid)) == 1

    rig.clock.advance(timedelta(seconds=5))
    rig.send()  # a reply renews the session and re-enables the warning
    assert rig.session()["warned"] == 0
    rig.clock.advance(expires - rig.clock.now())
    rig.timeouts.on_fire(sid)  # the stale wake-up at the old expiry
    assert rig.session()["closed_at"] is None
    assert not any(NOTICE in b for b in rig.outbound(sid))
