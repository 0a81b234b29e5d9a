"""Benchmark 2: per-message cost and server memory with 1k, 10k and 100k open sessions.

One `tertulia serve` runs throughout while the open sessions grow, each with its pending
timeout job (SESSION_TIMEOUT_MINUTES=600, so nothing expires during the run):

- up to 10k the server opens them itself: every new phone sends a signed "hola" webhook
  (the server creates the session, arms its job and greets it);
- from 10k to 100k they are seeded by bench/seed.py while the server runs (another
  process writing rows and jobs, which the design allows: the scheduler re-reads the
  store every second): session rows with executemany, jobs through APScheduler's own
  code (see bench/seed.py for the method and its check against Timeouts.arm).

At each size, once the outbox is drained: the cost of one message to an existing session
(latency at concurrency 1, 3 runs, median), throughput at concurrency 8 (3 runs), the
server's RSS (VmRSS of /proc/<pid>/status) before and after, and the cost of the
periodic sweep's two queries, of the stats block and of the outbox's claim query on that
database.

Settings that differ from the defaults, and why:

- SWEEP_INTERVAL_SECONDS=86400: the sweep's orphan-jobs query is O(jobs x open sessions)
  (reported below, and in bench/restart.py); at the default 60 s it would run for tens of
  minutes at 100k and hold a core, so the per-message figures would measure the sweep.
- STATS_INTERVAL_MINUTES=1440: the stats block lists every open session (its cost is
  reported below); at the default 5 min it would land inside a measurement at random.
- TWILIO_MAX_MPS=1000: only so the seeding greetings (10k of them) drain in seconds and
  not in two minutes; pacing is benchmarked in bench/outbox.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/scale.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c
from bench import seed

TIMEOUT_MINUTES = 600.0


def _open_via_webhooks(port: int, start: int, stop: int) -> dict[str, Any]:
    spec = c.load_spec(port, concurrency=16, duration=600, phones=(start, stop - start),
                       texts=["hola"], order="rounds", n=stop - start)
    return c.run_load(spec, limit=900)


def _seed_bulk(db: Path, start: int, stop: int) -> seed.Seeded:
    base = datetime.now(UTC) + timedelta(minutes=TIMEOUT_MINUTES)
    return seed.seed(db, stop - start, first_phone=start,
                     expires_at=lambda i: base + timedelta(microseconds=i),
                     timeout=timedelta(minutes=TIMEOUT_MINUTES))


def _counts(db: Path) -> tuple[int, int]:
    conn = c.db_connect(db)
    try:
        open_sessions = conn.execute(
            "SELECT count(*) FROM sessions WHERE closed_at IS NULL").fetchone()[0]
        jobs = conn.execute(
            "SELECT count(*) FROM apscheduler_jobs WHERE id LIKE 'timeout:%'").fetchone()[0]
    finally:
        conn.close()
    return int(open_sessions), int(jobs)


def _measure(port: int, size: int, reps: int, c1_n: int, c8_seconds: float) -> dict[str, Any]:
    c1 = []
    for rep in range(reps):
        spec = c.load_spec(port, concurrency=1, duration=60, phones=(0, size), texts=["mmm"],
                           order="random", n=c1_n, seed=100 + rep)
        c1.append(c.run_load(spec))
    c8 = []
    for rep in range(reps):
        spec = c.load_spec(port, concurrency=8, duration=c8_seconds, phones=(0, size),
                           texts=["mmm"], order="random", seed=200 + rep)
        c8.append(c.run_load(spec))
    return {"c1": c.summarize_runs(c1), "c8": c.summarize_runs(c8), "c1_runs": c1,
            "c8_runs": c8}


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    sizes = [300, 1_000, 5_000] if quick else [1_000, 10_000, 100_000]
    via_server_up_to = sizes[1]
    reps = 1 if quick else 3
    c1_n = 100 if quick else 300
    c8_seconds = 1.0 if quick else 3.0
    warm_phones = 50
    warm_n = 150 if quick else 400
    report = c.Report("Scale of open sessions (bench/scale.py)", quick=quick)
    rows: list[dict[str, Any]] = []
    with c.workdir("scale", args.keep) as work:
        db = work / "bench.db"
        fake, fake_url = c.start_fake(work, latency=0.05)
        server = c.start_tertulia(work, db, fake_url, extra_env={
            "SESSION_TIMEOUT_MINUTES": str(TIMEOUT_MINUTES), "SWEEP_INTERVAL_SECONDS": "86400",
            "STATS_INTERVAL_MINUTES": "1440", "TWILIO_MAX_MPS": "1000"})
        rss_start = server.rss_kb()
        # Warm-up: the first phones open sessions and chat; the empty-ish reference point.
        _open_via_webhooks(server.port, 0, warm_phones)
        c.run_load(c.load_spec(server.port, concurrency=8, duration=3, phones=(0, warm_phones),
                               texts=["mmm"], n=warm_n))
        c.wait_drained(server.port, 60)
        rss_ref = server.rss_kb()
        have = warm_phones
        for size in sizes:
            rss_before_seed = server.rss_kb()
            t0 = time.monotonic()
            if size <= via_server_up_to:
                method = "webhooks via the server"
                seeded = _open_via_webhooks(server.port, have, size)
                seed_rate = seeded["rps"]
            else:
                method = "bench/seed.py while the server runs"
                done = _seed_bulk(db, have, size)
                seed_rate = (size - have) / max(1e-9, done.rows_seconds + done.jobs_seconds)
            seed_seconds = time.monotonic() - t0
            have = size
            drained, drain_s = c.wait_drained(server.port, 300)
            time.sleep(1.0)
            rss_seeded = server.rss_kb()
            open_sessions, jobs = _counts(db)
            c.progress(f"scale {size}: seeded by {method} in {seed_seconds:.1f} s "
                       f"(drained {drained} in {drain_s:.1f} s); measuring")
            measured = _measure(server.port, size, reps, c1_n, c8_seconds)
            rss_after = server.rss_kb()
            c.progress(f"scale {size}: c=1 p50 {measured['c1']['p50']:.2f} ms, c=8 "
                       f"{measured['c8']['rps']:.0f} req/s; RSS {rss_after} KB")
            c.wait_drained(server.port, 120)  # the claim probe needs a drained outbox
            probes = c.sweep_query_costs(db, budget=10.0 if quick else 20.0)
            stats = c.stats_block_cost(db, TIMEOUT_MINUTES)
            outq = c.outbox_query_costs(db)
            rows.append({
                "size": size, "method": method, "seed_s": seed_seconds, "seed_rate": seed_rate,
                "drained": drained, "drain_s": drain_s, "open": open_sessions, "jobs": jobs,
                "rss_before_seed": rss_before_seed, "rss_seeded": rss_seeded,
                "rss_after": rss_after, **measured, "probes": probes, "stats": stats,
                "outbox_q": outq,
            })
        server.stop()
        log = c.log_summary(server.proc.log_path)
        excerpts = c.log_excerpts(server.proc.log_path)
        fake.stop()

    report.settings({
        "SESSION_TIMEOUT_MINUTES": TIMEOUT_MINUTES, "SWEEP_INTERVAL_SECONDS": 86400,
        "STATS_INTERVAL_MINUTES": 1440, "TWILIO_MAX_MPS": 1000, "TIMEOUT_REARM": "self",
        "fake latency": "50 ms", "c=1 messages per run": c1_n, "c=8 seconds per run": c8_seconds,
        "reps": reps, "measured text": "mmm to random existing sessions",
    })
    report.text(
        "Why three settings differ from the defaults: see the docstring of bench/scale.py "
        "(the sweep and the stats block would otherwise run inside the measurements; their "
        "costs are in the last table). RSS reference: "
        f"{rss_start:,} KB at start, {rss_ref:,} KB after a warm-up with {warm_phones} "
        "sessions.")
    report.table(
        ["open sessions", "seeded by", "pending jobs", "c=1 p50 ms", "c=1 mean ms",
         "c=1 p99 ms", "c=8 req/s", "c=8 p50 ms", "c=8 p99 ms", "RSS seeded KB",
         "RSS after KB"],
        [[r["open"], r["method"], r["jobs"], r["c1"]["p50"], r["c1"]["mean"], r["c1"]["p99"],
          r["c8"]["rps"], r["c8"]["p50"], r["c8"]["p99"], r["rss_seeded"], r["rss_after"]]
         for r in rows], caption="Per-message cost and memory (medians of the runs)")
    first, last = rows[0], rows[-1]
    cost_ratio = last["c1"]["p50"] / first["c1"]["p50"]
    mean_ratio = last["c1"]["mean"] / first["c1"]["mean"]
    tput_ratio = last["c8"]["rps"] / first["c8"]["rps"]
    kb_seeded = (last["rss_seeded"] - rss_ref) / max(1, last["open"] - warm_phones)
    kb_after = (last["rss_after"] - rss_ref) / max(1, last["open"] - warm_phones)
    per_size = ", ".join(
        f"{r['open']:,}: {(r['rss_seeded'] - rss_ref) / max(1, r['open'] - warm_phones):.2f}"
        for r in rows)
    report.table(["target (issue 5)", "goal", "measured", "met"], [
        [f"per-message cost at {last['open']:,} vs {first['open']:,} (c=1 p50)", "<= 1.2x",
         f"{cost_ratio:.2f}x", "yes" if cost_ratio <= 1.2 else "no"],
        ["same, c=1 mean", "<= 1.2x", f"{mean_ratio:.2f}x", "yes" if mean_ratio <= 1.2 else "no"],
        ["throughput at c=8, largest / smallest", "(flat)", f"{tput_ratio:.2f}x", ""],
        [f"RSS growth per open session (seeded, vs the {warm_phones}-session reference)",
         "< 1 KB", f"{kb_seeded:.2f} KB", "yes" if kb_seeded < 1 else "no"],
        ["RSS growth per open session (after the measured load)", "< 1 KB",
         f"{kb_after:.2f} KB", "yes" if kb_after < 1 else "no"],
    ], caption=f"Targets (KB per session at each size: {per_size})")
    report.table(
        ["open sessions", "seeding s", "seeding rate /s", "outbox drained", "drain s",
         "RSS before seeding KB"],
        [[r["open"], r["seed_s"], r["seed_rate"], "yes" if r["drained"] else "NO", r["drain_s"],
          r["rss_before_seed"]] for r in rows], caption="Seeding")
    probe_rows = []
    for r in rows:
        p = r["probes"]
        orphan = p["orphan_jobs"]
        orphan_text = (f"{orphan['seconds']:.2f}" if orphan["complete"]
                       else f"> {orphan['seconds']:.0f} (interrupted)")
        probe_rows.append([
            r["open"], p["jobs"], f"{p['sessions_without_job']['seconds']:.3f}", orphan_text,
            c.fmt(p.get("orphan_jobs_per_job_ms"), 3),
            c.fmt(p.get("orphan_jobs_estimate_s"), 1),
            f"{p['orphan_rewrite']['seconds']:.3f}", f"{r['stats']['seconds']:.2f}",
            r["stats"]["lines"],
        ])
    report.table(
        ["open sessions", "jobs", "sweep: sessions_without_job s", "sweep: orphan_jobs s",
         "orphan_jobs ms per job", "orphan_jobs estimated s", "NOT EXISTS rewrite s",
         "stats block s", "stats block lines"], probe_rows,
        caption="What the periodic sweep and the stats block cost at each size (run on the "
                "database by the bench process, same SQL as persistence/queries.py and "
                "engine/monitoring.py; the sweep also runs once at every start, before "
                "serving)")
    report.table(
        ["open sessions", "messages rows", "claim ms (drained outbox)",
         "pending_count ms (/healthz)", "claim plan"],
        [[r["open"], r["outbox_q"]["messages"], r["outbox_q"]["claim"]["seconds"] * 1000,
          r["outbox_q"]["pending_count"]["seconds"] * 1000,
          f"`{r['outbox_q']['claim'].get('plan', '?')}`"] for r in rows],
        caption="The outbox dispatcher's claim query and /healthz's count at each size (the "
                "code's own calls on the drained outbox, median of 3; the dispatcher claims "
                "on every wake-up, and a commit that queues a reply wakes it)")
    report.text(f"Server log: {log}")
    c.log_report(report, "Server", excerpts)
    report.write(not args.no_write)
    return {"rows": rows}


def main(argv: list[str] | None = None) -> None:
    run(c.bench_args(__doc__ or "", argv))


if __name__ == "__main__":
    main()
