"""Where PostgreSQL's time goes under webhook load: sampled pg_stat_activity.

A diagnostic for bench/workers.py part 1. One `tertulia serve [--workers N]` on a fresh
PostgreSQL database, 1024 phones opened with "hola", then "mmm" at concurrency 32 for
8 s while this process samples pg_stat_activity every 20 ms (the server's database
only): each sample counts the backends that are active (running a statement, by its
text) or idle in transaction (between statements of an open transaction). The counts
are the share of wall time the server's connections spent in each.

    python -m bench.pg_activity [--workers 1] [--no-write]
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c
from bench import workers as w


def _sample(dsn: str, db: str, stop: threading.Event, out: Counter[str], n: list[int]) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(5_000):  # bounded: 100 s at 20 ms
            if stop.is_set():
                break
            rows = conn.execute(
                "SELECT state, wait_event_type, wait_event, query FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid() AND state <> 'idle'",
                (db,)).fetchall()
            n[0] += 1
            for state, wtype, wevent, query in rows:
                text = re.sub(r"\s+", " ", query or "")[:110]
                wait = f" [wait {wtype}:{wevent}]" if wtype and wtype != "Client" else ""
                out[f"{state}{wait}: {text}" if state == "active" else
                    f"{state}{wait} (last: {text})"] += 1
            time.sleep(0.02)


def _tables(dsn: str) -> dict[str, tuple[int, int, int, int, str]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = conn.execute(
            "SELECT relname, n_live_tup, seq_scan, seq_tup_read, coalesce(idx_scan, 0), "
            "(last_autoanalyze IS NOT NULL OR last_analyze IS NOT NULL) "
            "FROM pg_stat_user_tables").fetchall()
    return {r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4]), "yes" if r[5] else "no")
            for r in rows}


def run(args: argparse.Namespace) -> None:
    rep = c.Report(f"PostgreSQL activity under webhook load, {args.workers} worker(s) "
                   "(bench/pg_activity.py)", quick=False)
    counts: Counter[str] = Counter()
    samples = [0]
    with c.workdir("pgact", args.keep) as work:
        fake, fake_url = c.start_fake(work, latency=0.05)
        name = f"bench_w_act{args.workers}"
        with w.pg_database(name, work) as url:
            server = w.start_server(work, "act", url, fake_url, workers=args.workers,
                                    extra_env={"SESSION_TIMEOUT_MINUTES": "600"})
            try:
                w._open_sessions(server.port, 1024)
                tables0 = _tables(w.pg_dsn(name))
                cpu0, pm = w.tree_cpu(server.pid), w.postmaster_pid()
                pg0 = w.tree_cpu(pm)
                stop = threading.Event()
                t = threading.Thread(target=_sample,
                                     args=(w.pg_dsn("postgres"), name, stop, counts, samples))
                t.start()
                load = c.run_load(c.load_spec(server.port, concurrency=32, duration=8,
                                              phones=(0, 1024), texts=["mmm"]))
                cpu1, pg1 = w.tree_cpu(server.pid), w.tree_cpu(pm)
                stop.set()
                t.join(30)
                time.sleep(2.0)  # backends flush their table statistics within a second
                tables1 = _tables(w.pg_dsn(name))
                pending = c.pending_outbox(server.port)
            finally:
                w.stop_server(server)
        fake.stop()
    rep.text(f"c=32, 8 s: {load['rps']:.0f} req/s, p99 {load['lat_ms']['p99']:.0f} ms; outbox "
             f"pending at the end {pending}; {samples[0]} samples of pg_stat_activity.")
    n = max(1, load["requests"])
    rep.text(f"CPU per request over the load: server {1e6 * ((cpu1 or 0) - (cpu0 or 0)) / n:,.0f}"
             f" µs, PostgreSQL {1e6 * ((pg1 or 0) - (pg0 or 0)) / n:,.0f} µs.")
    rep.table(["table", "rows", "seq scans", "rows read by seq scans", "index scans",
               "analyzed (auto or by hand) before the load"],
              [[t, tables1[t][0], tables1[t][1] - tables0[t][1], tables1[t][2] - tables0[t][2],
                tables1[t][3] - tables0[t][3], tables0[t][4]]
               for t in sorted(tables1) if t in tables0],
              caption="pg_stat_user_tables, the load's difference")
    rep.table(["backends in this state per sample (mean)", "state: statement"],
              [[f"{k / max(1, samples[0]):.2f}", f"`{q}`"] for q, k in counts.most_common(14)])
    rep.write(not args.no_write)


def main(argv: list[str] | None = None) -> None:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--workers", type=int, default=1)

    run(c.bench_args(__doc__ or "", argv, extra))


if __name__ == "__main__":
    main()
