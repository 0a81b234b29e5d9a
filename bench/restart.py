"""Benchmark 4: restart recovery — kill -9 with pending timeouts, then start again.

For each size (10k and 100k pending timeouts; 1k and 3k in --quick):

1. `tertulia serve` (S1) starts on an empty database. While it runs, bench/seed.py writes
   the open sessions with their timeout jobs (through APScheduler's own code, see
   bench/seed.py): 80% expire in 10 hours, 20% within the downtime to come. (Seeding
   before S1 starts would not do: S1's start-up sweep would take as long as the restart
   measured below.) S1 runs with SWEEP_INTERVAL_SECONDS=86400 so its periodic sweep
   cannot start while the jobs are written; S1 is scaffolding, not measured.
2. At the planned moment, before the first of them is due, S1 gets SIGKILL (kill -9).
3. The server stays down for 10 s, while the 20% come due.
4. S2 starts with default settings (SESSION_TIMEOUT_MINUTES=600). Measured from its
   spawn: time to /healthz 200 (polled every 20 ms) and time until every timeout that
   came due during the downtime is processed (the sessions table, polled every 200 ms).
   Both are bounded; a bound reached is reported as such.
5. Checks: each due session closed once, with reason timeout and one notice; the 80%
   still open with their jobs. Then the sweep's queries are timed on that database
   (bench.common.sweep_query_costs), since the sweep runs before serving.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/restart.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c
from bench import seed

TIMEOUT_MINUTES = 600.0


def _one(work: Path, fake_url: str, total: int, downtime: float, bound: float,
         due_share: float) -> dict[str, Any]:
    db = work / f"restart-{total}.db"
    far_n = int(total * (1 - due_share))
    due_n = total - far_n
    s1 = c.start_tertulia(work, db, fake_url, name=f"s1-{total}", extra_env={
        "SESSION_TIMEOUT_MINUTES": str(TIMEOUT_MINUTES), "SWEEP_INTERVAL_SECONDS": "86400"})
    far_at = datetime.now(UTC) + timedelta(minutes=TIMEOUT_MINUTES)
    t_seed = time.monotonic()
    seed.seed(db, far_n, first_phone=0, expires_at=lambda i: far_at + timedelta(microseconds=i),
              timeout=timedelta(minutes=TIMEOUT_MINUTES))
    far_seconds = time.monotonic() - t_seed
    # The due ones come last, so their times can be fixed just before they are written.
    due_estimate = far_seconds * due_n / max(1, far_n)
    kill_at = datetime.now(UTC) + timedelta(seconds=due_estimate + 3.0)
    step = (downtime - 1.0) / max(1, due_n)
    first_due = kill_at + timedelta(seconds=0.5)
    due = seed.seed(db, due_n, first_phone=far_n,
                    expires_at=lambda i: first_due + timedelta(seconds=i * step),
                    timeout=timedelta(minutes=TIMEOUT_MINUTES))
    due_lo, due_hi = due.ids[0], due.ids[-1]
    wait = (kill_at - datetime.now(UTC)).total_seconds()
    if wait > 0:
        time.sleep(wait)
    conn = c.db_connect(db)
    closed_before_kill = conn.execute(
        "SELECT count(*) FROM sessions WHERE id BETWEEN ? AND ? AND closed_at IS NOT NULL",
        (due_lo, due_hi)).fetchone()[0]
    rss_s1 = s1.rss_kb()
    s1.proc.kill9()
    killed = datetime.now(UTC)
    c.progress(f"restart {total}: S1 killed {'on time' if wait > 0 else f'{-wait:.1f} s late'}"
               f"; down for {downtime:.0f} s")
    up_at = killed + timedelta(seconds=downtime)
    time.sleep(max(0.0, (up_at - datetime.now(UTC)).total_seconds()))
    restart_wall = datetime.now(UTC)
    s2 = c.start_tertulia(work, db, fake_url, name=f"s2-{total}", wait=False, extra_env={
        "SESSION_TIMEOUT_MINUTES": str(TIMEOUT_MINUTES)})
    spawned = s2.spawned_at
    healthy = processed = None
    deadline = spawned + bound
    next_db_poll = 0.0
    remaining = due_n
    rss_peak = 0
    for _ in range(int(bound / 0.02) + 10):  # bounded, and by the deadline below
        now = time.monotonic()
        if now >= deadline or (healthy is not None and processed is not None):
            break
        if not s2.proc.alive:
            break
        if healthy is None:
            status, _ = c.http_get(s2.port, "/healthz", timeout=0.5)
            if status == 200:
                healthy = time.monotonic() - spawned
        if processed is None and now >= next_db_poll:
            next_db_poll = now + 0.2
            remaining = conn.execute(
                "SELECT count(*) FROM sessions WHERE id BETWEEN ? AND ? "
                "AND closed_at IS NULL", (due_lo, due_hi)).fetchone()[0]
            rss_peak = max(rss_peak, s2.rss_kb() or 0)
            if remaining == 0:
                processed = time.monotonic() - spawned
        time.sleep(0.02)
    alive = s2.proc.alive
    s2.stop(timeout=20)
    log = c.log_summary(s2.proc.log_path)
    excerpts = c.log_excerpts(s2.proc.log_path)
    since = c.sa_time(first_due - timedelta(seconds=1))
    reasons = dict(conn.execute(
        "SELECT coalesce(close_reason, 'open'), count(*) FROM sessions "
        "WHERE id BETWEEN ? AND ? GROUP BY 1", (due_lo, due_hi)).fetchall())
    notices = dict(conn.execute(
        "SELECT n, count(*) FROM (SELECT s.id, (SELECT count(*) FROM messages m "
        "WHERE m.session_id = s.id AND m.direction = 'out' AND m.created_at >= ?) AS n "
        "FROM sessions s WHERE s.id BETWEEN ? AND ?) GROUP BY n",
        (since, due_lo, due_hi)).fetchall())
    far_open = conn.execute(
        "SELECT count(*) FROM sessions WHERE id < ? AND closed_at IS NULL", (due_lo,)
    ).fetchone()[0]
    jobs_left = conn.execute(
        "SELECT count(*) FROM apscheduler_jobs WHERE id LIKE 'timeout:%'").fetchone()[0]
    conn.close()
    probes = c.sweep_query_costs(db, budget=20.0)
    return {
        "total": total, "due": due_n, "far": far_n, "downtime": downtime, "bound": bound,
        "seed_far_s": far_seconds, "closed_before_kill": closed_before_kill,
        "kill_late_s": max(0.0, -wait), "healthy_s": healthy, "processed_s": processed,
        "remaining": remaining, "alive_at_end": alive, "reasons": reasons, "notices": notices,
        "far_open": far_open, "jobs_left": jobs_left, "rss_s1": rss_s1, "rss_s2_peak": rss_peak,
        "log": log, "excerpts": excerpts, "probes": probes,
        "restart_wall": restart_wall.isoformat(),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    sizes = [1_000] if quick else [10_000, 100_000]
    downtime = 3.0 if quick else 10.0
    bound = 60.0 if quick else 150.0
    report = c.Report("Restart recovery (bench/restart.py)", quick=quick)
    results = []
    with c.workdir("restart", args.keep) as work:
        fake, fake_url = c.start_fake(work, latency=0.05)
        for total in sizes:
            results.append(_one(work, fake_url, total, downtime, bound, 0.2))
            r = results[-1]
            c.progress(f"restart {total}: healthy {r['healthy_s']}, due processed "
                       f"{r['processed_s']}")
        fake.stop()
    report.settings({"sizes": sizes, "due share": "20%", "downtime": f"{downtime:g} s",
                     "bound per restart": f"{bound:g} s", "S2 settings":
                     "defaults + SESSION_TIMEOUT_MINUTES=600"})

    def secs(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else f"> {bound:g} (bound reached)"

    report.table(
        ["pending timeouts", "due during downtime", "restart to /healthz 200 s",
         "restart to all due processed s", "due still open at the end", "due rate /s",
         "closed before the kill"],
        [[r["total"], r["due"], secs(r["healthy_s"]), secs(r["processed_s"]), r["remaining"],
          f"{r['due'] / r['processed_s']:,.0f}" if r["processed_s"] else "–",
          r["closed_before_kill"]] for r in results],
        caption="Restart (times from the new process's spawn)")
    report.table(
        ["pending", "close reasons of the due", "notices per due session", "far ones open",
         "jobs left", "RSS S1 KB", "RSS S2 peak KB", "S2 log"],
        [[r["total"], ", ".join(f"{k}: {v:,}" for k, v in r["reasons"].items()),
          ", ".join(f"{k}: {v:,}" for k, v in sorted(r["notices"].items())), r["far_open"],
          r["jobs_left"], r["rss_s1"], r["rss_s2_peak"], str(r["log"])] for r in results],
        caption="Checks")
    report.table(
        ["pending", "jobs / open sessions now", "sessions_without_job s", "orphan_jobs s",
         "orphan_jobs ms per job", "orphan_jobs estimated s", "NOT EXISTS rewrite s"],
        [[r["total"], f"{r['probes']['jobs']:,} / {r['probes']['open_sessions']:,}",
          f"{r['probes']['sessions_without_job']['seconds']:.3f}",
          (f"{r['probes']['orphan_jobs']['seconds']:.2f}" if r["probes"]["orphan_jobs"]
           ["complete"] else f"> {r['probes']['orphan_jobs']['seconds']:.0f} (interrupted)"),
          c.fmt(r["probes"].get("orphan_jobs_per_job_ms"), 3),
          c.fmt(r["probes"].get("orphan_jobs_estimate_s"), 1),
          f"{r['probes']['orphan_rewrite']['seconds']:.3f}"] for r in results],
        caption="The start-up sweep's queries on the same database afterwards (the sweep "
                "runs before the server listens, so it bounds the time to healthy)")
    last = results[-1]
    report.table(["target (issue 5)", "goal", "measured", "met"], [
        [f"restart to healthy with {last['total']:,} pending", "< 5 s", secs(last["healthy_s"]),
         "yes" if last["healthy_s"] is not None and last["healthy_s"] < 5 else "no"],
        *[[f"restart to healthy with {r['total']:,} pending", "< 5 s", secs(r["healthy_s"]),
           "yes" if r["healthy_s"] is not None and r["healthy_s"] < 5 else "no"]
          for r in results[:-1]],
    ], caption="Target")
    for r in results:
        c.log_report(report, f"Restarted server ({r['total']:,} pending)", r["excerpts"])
    report.write(not args.no_write)
    return {"results": results}


def main(argv: list[str] | None = None) -> None:
    run(c.bench_args(__doc__ or "", argv))


if __name__ == "__main__":
    main()
