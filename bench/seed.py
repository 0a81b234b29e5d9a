"""Seed open sessions, each with its pending timeout job, fast; for 10k to 100k sessions.

Opening 100k sessions through webhooks would take minutes (and each greeting then waits
its turn in the outbox at TWILIO_MAX_MPS), so the benchmarks that need that many write
the rows directly. What is written is what `tertulia serve` writes for a phone that sent
"hola" and got its greeting (checked against a real server's rows):

- ``sessions``: state ``greeting``, version 2, context ``{}``, ``last_inbound_at`` =
  ``expires_at`` - SESSION_TIMEOUT, times in SQLAlchemy's SQLite format;
- ``session_events``: the ``start`` event;
- ``messages``: the inbound "hola" (``received``) and the outbound greeting as Twilio
  accepted it (``queued``, with a SID), so the outbox is empty;

inserted with ``executemany`` in batches, one transaction each (BEGIN IMMEDIATE).

The jobs go through APScheduler's own code, never hand-made rows:

- the first session is armed with ``engine.scheduling.timeouts.Timeouts.arm`` itself, the call the
  server makes (``add_job("engine.scheduling.timeouts:fire", "date", run_date=expires_at,
  args=[id], id="timeout:<id>", replace_existing=True)``), on a job-store engine built
  like the server's (``persistence.db.make_engine(url, immediate=False)``);
- the others are the same ``apscheduler.job.Job`` objects, serialised by the same code
  as ``SQLAlchemyJobStore.add_job`` (``pickle.dumps(job.__getstate__(),
  store.pickle_protocol)``, ``next_run_time`` as a UTC timestamp) and inserted into the
  job store's own table object (``store.jobs_t``) with one executemany per batch.
  ``Timeouts.arm`` costs about 0.7 ms per job here (one transaction each), so 100k
  would take over a minute; the batch path takes seconds.
- the seeder checks that the batch path's row is byte-identical to the one ``arm``
  wrote, and stops if not.

    python -m bench.seed --db /tmp/x.db --sessions 100000 --expires-in-minutes 600
"""

from __future__ import annotations

import argparse
import json
import pickle
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import PHONE_BASE, sa_time

GREETING = ("¡Hola, Bench! 👋 Soy el asistente de Tertulia. ¿Querés probar gratis nuestra "
            "plataforma? Respondé *sí* y arrancamos.")


@dataclass
class Seeded:
    ids: list[int]
    rows_seconds: float
    jobs_seconds: float


def _url(db: Path) -> str:
    return f"sqlite:///{db}"


def ensure_schema(db: Path) -> None:
    from persistence import migrate

    migrate.upgrade(_url(db))


def insert_sessions(
    db: Path, count: int, *, first_phone: int, expires_at: Callable[[int], datetime],
    timeout: timedelta, history: bool = True, batch: int = 10_000,
) -> list[int]:
    """Insert `count` open sessions (phones first_phone..), returning their ids."""
    conn = sqlite3.connect(str(db), timeout=60.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=60000")
    ids: list[int] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        start_id = int(conn.execute("SELECT coalesce(max(id), 0) FROM sessions").fetchone()[0])
        conn.execute("COMMIT")
        for lo in range(0, count, batch):
            hi = min(count, lo + batch)
            sessions: list[tuple[Any, ...]] = []
            events: list[tuple[Any, ...]] = []
            messages: list[tuple[Any, ...]] = []
            for i in range(lo, hi):
                sid = start_id + 1 + i
                exp = expires_at(i)
                opened = sa_time(exp - timeout)
                phone = f"+{PHONE_BASE + first_phone + i}"
                sessions.append((sid, phone, opened, opened, sa_time(exp)))
                if history:
                    events.append((sid, opened))
                    messages.append((sid, f"SMseed{uuid.uuid4().hex[:26]}", "in", "hola",
                                     "received", 0, opened, None))
                    messages.append((sid, f"SM{uuid.uuid4().hex}", "out", GREETING,
                                     "queued", 1, opened, opened))
                ids.append(sid)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO sessions (id, channel, phone, flow, state, started_at, "
                "last_inbound_at, expires_at, closed_at, close_reason, version, context) "
                "VALUES (?, 'whatsapp', ?, 'trial', 'greeting', ?, ?, ?, NULL, NULL, 2, '{}')",
                sessions)
            conn.executemany(
                "INSERT INTO session_events (session_id, at, from_state, to_state, trigger, "
                "detail) VALUES (?, ?, NULL, 'greeting', 'start', 'flow trial')", events)
            conn.executemany(
                "INSERT INTO messages (session_id, channel, direction, twilio_sid, body, "
                "body_redacted, status, error_code, attempts, created_at, sent_at, "
                "next_attempt_at) VALUES (?, 'whatsapp', ?, ?, ?, NULL, ?, NULL, ?, ?, ?, NULL)",
                [(m[0], m[2], m[1], m[3], m[4], m[5], m[6], m[7]) for m in messages])
            conn.execute("COMMIT")
    finally:
        conn.close()
    return ids


def arm_jobs(db: Path | None, items: Sequence[tuple[int, datetime]], *, batch: int = 10_000,
             url: str | None = None, grace: timedelta = timedelta(0)) -> None:
    """One pending timeout job per (session id, expires_at), through APScheduler (on the
    SQLite file `db`, or on the database at `url`, e.g. PostgreSQL), firing `grace`
    after the expiry as the server's Timeouts does on that backend."""
    from apscheduler.job import Job
    from apscheduler.triggers.date import DateTrigger
    from apscheduler.util import datetime_to_utc_timestamp

    from engine.scheduling.timeouts import FIRE, Timeouts, job_id
    from persistence.db import make_engine

    if not items:
        return
    assert url is not None or db is not None
    jobs_db = make_engine(url or _url(db), immediate=False)  # type: ignore[arg-type]
    timeouts = Timeouts(None, jobs_db, grace=grace)  # type: ignore[arg-type]  # arm() needs no engine
    timeouts.start(run_jobs=False)  # paused: it writes jobs, never runs them
    scheduler, store = timeouts.scheduler, timeouts.store

    def row(session_id: int, expires: datetime) -> dict[str, object]:
        job = Job(scheduler, id=job_id(session_id), func=FIRE,
                  trigger=DateTrigger(expires, timezone=scheduler.timezone),
                  executor="default", args=(session_id,), kwargs={}, name="fire",
                  misfire_grace_time=None, coalesce=True, max_instances=1,
                  next_run_time=expires)
        return {"id": job.id, "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
                "job_state": pickle.dumps(job.__getstate__(), store.pickle_protocol)}

    try:
        first_id, first_exp = items[0]
        timeouts.arm(first_id, first_exp)  # the server's own call
        with jobs_db.connect() as conn:
            stored = conn.execute(
                store.jobs_t.select().where(store.jobs_t.c.id == job_id(first_id))).first()
        built = row(first_id, first_exp + grace)
        if stored is None or (stored.job_state, stored.next_run_time) != \
                (built["job_state"], built["next_run_time"]):
            raise SystemExit("bench.seed: the batch job row differs from Timeouts.arm's; "
                             "APScheduler changed, fix bench/seed.py")
        rest = items[1:]
        for lo in range(0, len(rest), batch):
            rows = [row(sid, exp + grace) for sid, exp in rest[lo:lo + batch]]
            with jobs_db.begin() as conn:
                conn.execute(store.jobs_t.insert(), rows)
    finally:
        timeouts.shutdown()
        jobs_db.dispose()


def seed(
    db: Path, count: int, *, first_phone: int, expires_at: Callable[[int], datetime],
    timeout: timedelta, history: bool = True,
) -> Seeded:
    ensure_schema(db)
    t0 = time.perf_counter()
    ids = insert_sessions(db, count, first_phone=first_phone, expires_at=expires_at,
                          timeout=timeout, history=history)
    t1 = time.perf_counter()
    arm_jobs(db, [(sid, expires_at(i)) for i, sid in enumerate(ids)])
    t2 = time.perf_counter()
    return Seeded(ids, t1 - t0, t2 - t1)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.seed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--first-phone", type=int, default=0,
                        help=f"phones are +{PHONE_BASE} + first-phone + i")
    parser.add_argument("--expires-in-minutes", type=float, default=600.0)
    parser.add_argument("--spread-seconds", type=float, default=0.0,
                        help="spread expires_at evenly over this many seconds")
    parser.add_argument("--timeout-minutes", type=float, default=600.0,
                        help="the SESSION_TIMEOUT_MINUTES the server will run with")
    args = parser.parse_args()
    base = datetime.now(UTC) + timedelta(minutes=args.expires_in_minutes)
    step = args.spread_seconds / max(1, args.sessions)
    done = seed(args.db, args.sessions, first_phone=args.first_phone,
                expires_at=lambda i: base + timedelta(seconds=i * step),
                timeout=timedelta(minutes=args.timeout_minutes))
    print(json.dumps({"sessions": len(done.ids), "rows_s": round(done.rows_seconds, 2),
                      "jobs_s": round(done.jobs_seconds, 2)}))


if __name__ == "__main__":
    main()
