"""What one outbox claim costs as the backlog grows, on SQLite and on PostgreSQL.

A diagnostic for bench/workers.py: the dispatcher claims (persistence.outbox.claim)
inside the group-commit writer's transaction, so the claim's cost is paid inside the
same serialised batch as the webhooks. This times the code's own `claim` (limit 16, as a
dispatcher with 8 senders claims) in a transaction that is rolled back, on a database
holding 1024 open sessions and P pending outbound rows spread round robin over them.

    python -m bench.claim_cost [--no-write]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c
from bench import workers as w

PHONES = 1024
BACKLOGS = (0, 1_000, 4_000, 16_000)


class _Rollback(Exception):
    pass


def _fill(url: str, add: int, start: int) -> None:
    """`add` more pending outbound rows, round robin over the sessions' phones."""
    now = datetime.now(UTC).replace(tzinfo=None)
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        if not conn.execute("SELECT count(*) FROM sessions").fetchone()[0]:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO sessions (id, channel, phone, flow, state, started_at, "
                "last_inbound_at, expires_at, version, context) VALUES (?, 'whatsapp', ?, "
                "'trial', 'greeting', ?, ?, ?, 2, '{}')",
                [(i + 1, c.phone(i), c.sa_time(now.replace(tzinfo=UTC)),
                  c.sa_time(now.replace(tzinfo=UTC)),
                  c.sa_time((now + timedelta(hours=10)).replace(tzinfo=UTC)))
                 for i in range(PHONES)])
            conn.execute("COMMIT")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO messages (session_id, channel, direction, body, status, attempts, "
            "created_at) VALUES (?, 'whatsapp', 'out', 'reply', 'pending', 0, ?)",
            [((start + k) % PHONES + 1, c.sa_time(now.replace(tzinfo=UTC)))
             for k in range(add)])
        conn.execute("COMMIT")
        conn.close()
        return
    import psycopg

    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        if not conn.execute("SELECT count(*) FROM sessions").fetchone()[0]:  # type: ignore[index]
            conn.execute(
                "INSERT INTO sessions (channel, phone, flow, state, started_at, "
                "last_inbound_at, expires_at, version, context) SELECT 'whatsapp', p, 'trial', "
                "'greeting', %s, %s, %s, 2, '{}' FROM unnest(%s::text[]) AS u(p)",
                (now, now, now + timedelta(hours=10), [c.phone(i) for i in range(PHONES)]))
        ids = [r[0] for r in conn.execute("SELECT id FROM sessions ORDER BY id").fetchall()]
        conn.execute(
            "INSERT INTO messages (session_id, channel, direction, body, status, attempts, "
            "created_at) SELECT s, 'whatsapp', 'out', 'reply', 'pending', 0, %s "
            "FROM unnest(%s::int[]) AS u(s)",
            (now, [ids[(start + k) % PHONES] for k in range(add)]))
        conn.execute("ANALYZE")
        conn.commit()


def _time_claim(url: str, reps: int = 7) -> float:
    from persistence import outbox
    from persistence.db import make_engine
    from persistence.store import SqlStore

    engine = make_engine(url)
    store = SqlStore(engine)
    times = []
    try:
        for _ in range(reps + 1):
            now = datetime.now(UTC)
            t0 = time.perf_counter()
            try:
                with store.transaction() as tx:
                    outbox.claim(tx, channel="whatsapp", now=now, worker="probe",
                                 claim_until=now + timedelta(seconds=60), limit=16)
                    t1 = time.perf_counter()
                    raise _Rollback
            except _Rollback:
                pass
            times.append(t1 - t0)
    finally:
        engine.dispose()
    return c.median(times[1:]) * 1000


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rep = c.Report("Outbox claim cost vs backlog (bench/claim_cost.py)", quick=args.quick)
    rows: list[dict[str, Any]] = []
    with c.workdir("claim", args.keep) as work:
        sqlite_db = work / "claim.db"
        from persistence import migrate

        migrate.upgrade(f"sqlite:///{sqlite_db}")
        with w.pg_database("bench_w_claim", work) as pg_url:
            have = 0
            for backlog in BACKLOGS:
                for url in (f"sqlite:///{sqlite_db}", pg_url):
                    _fill(url, backlog - have, have)
                have = backlog
                rows.append({"backlog": backlog,
                             "sqlite_ms": _time_claim(f"sqlite:///{sqlite_db}"),
                             "pg_ms": _time_claim(pg_url)})
                c.progress(f"claim: backlog {backlog}: {rows[-1]}")
    rep.text(f"{PHONES} open sessions; P pending outbound rows round robin over them; the "
             "code's `persistence.outbox.claim(limit=16)` in a transaction rolled back, "
             "median of 7, milliseconds (the SELECT with its GROUP BY over every unsent row, "
             "plus the UPDATE of the 16 claimed).")
    rep.table(["pending rows", "SQLite claim ms", "PostgreSQL claim ms"],
              [[r["backlog"], r["sqlite_ms"], r["pg_ms"]] for r in rows])
    rep.write(not args.no_write)
    return rows


def main(argv: list[str] | None = None) -> None:
    run(c.bench_args(__doc__ or "", argv))


if __name__ == "__main__":
    main()
