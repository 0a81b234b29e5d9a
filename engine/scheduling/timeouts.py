"""Durable inactivity timeouts: APScheduler jobs in the same database as the sessions.

The row is the truth and the job is a wake-up call. A job `timeout:<session id>` fires
`engine.scheduling.timeouts:fire` (a stored path: renaming it needs a migration) with the session id
as its only argument. The engine re-reads the row under the write lock; if a message
moved `expires_at` since, the job re-arms itself there, which saves a job write on most
messages (TIMEOUT_REARM=message re-arms on every message instead, for comparison).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine as DbEngine
from sqlalchemy.exc import SQLAlchemyError

from engine.core.conversations import Conversations
from engine.core.ports import Fence
from engine.core.unit import Committed
from persistence import queries
from persistence.store import SqlStore, SqlTx

__all__ = [
    "FIRE", "HEARTBEAT", "POSTGRES_JOB_GRACE", "Timeouts", "fire", "forget", "heartbeat", "job_id",
    "sweep",
]

log = logging.getLogger("tertulia.timeouts")

FIRE = "engine.scheduling.timeouts:fire"
HEARTBEAT = "engine.scheduling.timeouts:heartbeat"
JOB_PREFIX = "timeout:"
# On PostgreSQL every worker's overdue scan closes timeouts as they come due, a hundred
# per round trip; a job fires this much later, only for what the scan has not closed.
POSTGRES_JOB_GRACE = timedelta(seconds=2)

# The process's Timeouts, for the module-level job functions APScheduler calls by path.
_active: Timeouts | None = None


class _TolerantJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """APScheduler's SQL job store, minus one way to die.

    APScheduler removes a fired date job from the store with no error handling: if the
    database refuses the write (disk full, read-only), or the job is already gone
    (JobLookupError), the scheduler's thread dies and no timeout fires again until a
    restart. Here the failure is logged instead; the job row stays, fires again once the
    database is back, and finds the session closed.
    """

    def remove_job(self, job_id: str) -> None:
        try:
            super().remove_job(job_id)
        except JobLookupError:
            # Someone else removed it first: a process that closed the session (`sessions
            # close`), or a scheduler that froze past its lease. Gone is what we wanted;
            # raising here would kill the scheduler's thread.
            pass
        except SQLAlchemyError as exc:
            log.error("could not remove job %s (%s); it will fire again", job_id, exc)
            # The row stays due, so the scheduler would loop on it at once: while the
            # database refuses writes, try about once a second instead.
            time.sleep(1.0)

    def update_job(self, job: Any) -> None:
        try:
            super().update_job(job)
        except JobLookupError:
            log.info("job %s was removed by another process meanwhile", job.id)
        except SQLAlchemyError as exc:
            log.error("could not update job %s (%s)", job.id, exc)

    def get_next_run_time(self) -> datetime | None:
        try:
            return super().get_next_run_time()  # type: ignore[no-any-return]
        except SQLAlchemyError as exc:
            log.error("could not read the next job time (%s); retrying in 1 s", exc)
            return datetime.now(UTC) + timedelta(seconds=1)


def job_id(session_id: int) -> str:
    return f"{JOB_PREFIX}{session_id}"


def fire(session_id: int) -> None:
    """The job function: expire the session if due, or re-arm at its later expiry."""
    if _active is not None:
        _active.on_fire(session_id)


def heartbeat() -> None:
    """Runs every second so the scheduler re-reads the store: jobs other processes added
    are seen within about a second instead of at the scheduler's next planned wake-up."""
    if _active is not None:
        _active.on_heartbeat()


class Timeouts:
    """The scheduler of one worker. Only the scheduler lease's holder runs jobs."""

    def __init__(
        self, conversations: Conversations, jobs_db: DbEngine, *, warning: timedelta | None = None,
        rearm_on_message: bool = False, on_tick: Callable[[], None] = lambda: None,
        batch: Callable[[int, Fence | None, Callable[[datetime | None], None]], None] | None = None,
        fence: Callable[[], Fence | None] | None = None, grace: timedelta = timedelta(0),
    ) -> None:
        self.conversations = conversations
        # How long after a session's expiry its job fires. Where every worker's overdue
        # scan closes sessions in batches (PostgreSQL), the job is the backstop: firing
        # with the scan would only contend with it for the same rows.
        self._grace = grace
        self._warning = warning
        self._rearm_on_message = rearm_on_message
        self._on_tick = on_tick
        self._batch = batch
        # The lease this worker acts under (None from it: another worker holds it). A
        # Timeouts without one is alone on its database and acts unfenced.
        self._fence = fence
        self.store = _TolerantJobStore(engine=jobs_db)
        self.scheduler = BackgroundScheduler(
            # The heartbeat lives in memory: it is this process's, not stored data.
            jobstores={"default": self.store, "local": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(8)},
            # None: a timeout due while we were down still fires, however late.
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
            timezone="UTC",
        )
        self.active = False
        # Set at shutdown: a job still running then must not arm its next wake-up in
        # stores already detached (the sweep arms it at the next start).
        self._closing = False

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, *, run_jobs: bool) -> None:
        """Start; `run_jobs` False (not the lock holder) only writes jobs to the store."""
        global _active
        _active = self
        # Added before start: once running, add_job waits for the scheduler's first pass
        # over due jobs (20k after a long downtime), which delayed serving by 25 s.
        self._start_heartbeat()
        self.scheduler.start(paused=not run_jobs)
        self.active = run_jobs

    def take_over(self) -> None:
        """This worker now holds the scheduler lease: start running jobs."""
        if not self.scheduler.running:
            return  # shut down already: this worker is stopping
        self.scheduler.resume()
        self.active = True

    def pause(self) -> None:
        """Another worker holds the lease now: stop running jobs, keep writing them."""
        if self.active and self.scheduler.running:
            self.scheduler.pause()
        self.active = False

    def thread_alive(self) -> bool:
        # APScheduler 3 has no public handle on its thread; the attribute is stable.
        thread = getattr(self.scheduler, "_thread", None)
        return thread is not None and bool(thread.is_alive())

    def _start_heartbeat(self) -> None:
        self.scheduler.add_job(HEARTBEAT, "interval", seconds=1, id="heartbeat",
                               replace_existing=True, jobstore="local")

    def shutdown(self) -> None:
        """Stop without running pending jobs; they stay in the store for the next start."""
        global _active
        self._closing = True
        if self.scheduler.running:
            # APScheduler looks for due jobs once more on shutdown, even when paused, and
            # would hand them to executors already gone; detached stores keep them intact.
            for alias in ("default", "local"):
                self.scheduler.remove_jobstore(alias, shutdown=True)
            self.scheduler.shutdown(wait=False)
        if _active is self:
            _active = None

    # -- arming --------------------------------------------------------------------------

    def on_commit(self, committed: Committed) -> None:
        """Conversations listener, called after commit: arm new sessions, drop closed ones."""
        for session in committed.opened:
            if session.is_open:
                self.arm(session.id, session.expires_at)
        if self._rearm_on_message:
            for session in committed.renewed:
                if session.is_open:
                    self.arm(session.id, session.expires_at)
        # A state's own timeout may come sooner than the job armed: move the job with it.
        for session in committed.rescheduled:
            if session.is_open and session.id not in committed.fired:
                self.arm(session.id, session.expires_at)
        for session in committed.closed:
            if session.id not in committed.fired:
                self.disarm(session.id)

    def arm(self, session_id: int, expires_at: datetime) -> None:
        run_at = self._first_wake(expires_at)
        self.scheduler.add_job(FIRE, "date", run_date=run_at, args=[session_id],
                               id=job_id(session_id), replace_existing=True)

    def forget_in(self, tx: SqlTx, session_ids: list[int]) -> None:
        """Drop these sessions' jobs inside `tx` (the overdue scan's, which closed them).

        A job APScheduler has already taken fires anyway and finds its session closed;
        its removal then finds no row, which the store tolerates.
        """
        names = {f"job{i}": job_id(session_id) for i, session_id in enumerate(session_ids)}
        if names:
            tx.execute(f"DELETE FROM {self.store.jobs_t.name} WHERE id IN "
                       f"({', '.join(':' + name for name in names)})", **names)

    def disarm(self, session_id: int) -> None:
        with contextlib.suppress(JobLookupError):  # already fired, or swept
            self.scheduler.remove_job(job_id(session_id))

    def _first_wake(self, expires_at: datetime) -> datetime:
        if self._warning is None:
            return expires_at + self._grace
        return max(expires_at - self._warning, self.conversations.clock.now())

    # -- firing --------------------------------------------------------------------------

    def on_fire(self, session_id: int) -> None:
        """The job fired. On SQLite the expiry joins the writer's next batch (the job
        thread does not wait; a crash before that commit is the sweep's to repair); on
        PostgreSQL the job's thread commits it (see Writer.expire).

        Only under the scheduler lease: a scheduler that froze past its lease and woke
        up must not act (its job is gone from the store; the new holder's sweep and the
        overdue scan see to the session).
        """
        fence = self._fence() if self._fence is not None else None
        if self._fence is not None and fence is None:
            log.info("timeout job for session %s fired without the scheduler lease; left "
                     "to the lease holder", session_id)
            return
        if self._batch is not None:
            self._batch(session_id, fence, lambda later: self.after_expire(session_id, later))
            return
        try:
            self.after_expire(session_id, self.conversations.expire(session_id, fence=fence))
        except Exception:
            # Left to the sweep: it re-arms or expires sessions that have no job.
            log.exception("timeout job for session %s failed", session_id)

    def after_expire(self, session_id: int, later: datetime | None) -> None:
        if later is not None:
            self._rearm(session_id, later)

    def _rearm(self, session_id: int, expires_at: datetime) -> None:
        if self._closing:
            return
        now = self.conversations.clock.now()
        fence = self._fence() if self._fence is not None else None
        may_act = self._fence is None or fence is not None
        if self._warning is not None and now >= expires_at - self._warning and may_act:
            self.conversations.warn(session_id, fence=fence)
            run_at = expires_at + self._grace
        else:
            run_at = self._first_wake(expires_at)
        # KeyError: the stores were detached by a shutdown that began meanwhile.
        with contextlib.suppress(KeyError):
            self.scheduler.add_job(FIRE, "date", run_date=run_at, args=[session_id],
                                   id=job_id(session_id), replace_existing=True)

    def on_heartbeat(self) -> None:
        self._on_tick()


def forget(jobs_db: DbEngine, session_ids: list[int]) -> None:
    """Remove the timeout jobs of sessions closed by a process that runs no scheduler."""
    store = SQLAlchemyJobStore(engine=jobs_db)
    for session_id in session_ids:
        with contextlib.suppress(JobLookupError):
            store.remove_job(job_id(session_id))


def sweep(timeouts: Timeouts, store: SqlStore) -> tuple[int, int, int]:
    """Repair drift between rows and jobs: (expired, re-armed, orphans removed).

    Covers a kill -9 between APScheduler handing a date job to its executor (which
    deletes it from the store) and the job running, and a crash between a commit and
    the job write that follows it.
    """
    expired = armed = 0
    now = timeouts.conversations.clock.now()
    for session_id, expires_at in queries.sessions_without_job(store, JOB_PREFIX):
        if expires_at <= now:
            timeouts.on_fire(session_id)
            expired += 1
        else:
            timeouts.arm(session_id, expires_at)
            armed += 1
    orphans = queries.orphan_jobs(store, JOB_PREFIX)
    for orphan in orphans:
        with contextlib.suppress(JobLookupError):
            timeouts.scheduler.remove_job(orphan)
    if expired or armed or orphans:
        log.info("sweep: expired %d session(s) with no job, re-armed %d, removed %d orphan "
                 "job(s)", expired, armed, len(orphans))
    return expired, armed, len(orphans)
