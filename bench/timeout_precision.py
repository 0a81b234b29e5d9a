"""Benchmark 3: timeout precision — 10k sessions expiring within the same 10 seconds.

`tertulia serve` starts on an empty database (default settings,
SESSION_TIMEOUT_MINUTES=1). While it runs, bench/seed.py writes 10k open sessions whose
`expires_at` are spread evenly over 10 s, starting a few seconds later, each with its
timeout job (`engine.scheduling.timeouts:fire`, DateTrigger at `expires_at`), through APScheduler's
own code (see bench/seed.py); `last_inbound_at` is one timeout earlier, so every session
is inside WhatsApp's 24-hour window and gets a notice. The scheduler sees jobs written
by another process within a second (its heartbeat), and the first is due well after that.

Two lags per session, both from `sessions.expires_at`:

- to the notice row: `messages.created_at` of the timeout notice (the brief's measure).
  The engine stamps it with the time `expire()` started, before it waited for the write
  lock, so it leaves out time queued behind other writers;
- to the commit, as seen from outside: the bench process polls the sessions table every
  100 ms and notes when each `closed_at` first appears (so it over-states by up to
  ~100 ms, plus the poll's own time).

Expiries per second: all sessions / (last close - first expires_at), and the busiest
1-second window of `closed_at`. Also checked: every session closed with reason timeout
and exactly one notice each.

With --profile (default in a full run) py-spy samples the server through the expiry
window, twice at once: GIL holders (bench/profile-timeouts.txt) and all threads with
waiting included (bench/profile-timeouts-wall.txt); both are summarised in RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/timeout_precision.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c
from bench import profiling, seed

BENCH_DIR = Path(__file__).resolve().parent


def _max_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best, i = 0, 0
    for j, t in enumerate(times):
        while t - times[i] >= window:
            i += 1
        best = max(best, j - i + 1)
    return best


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", dest="profile", action="store_true", default=None)
    parser.add_argument("--no-profile", dest="profile", action="store_false")


def run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    do_profile = (not quick) if args.profile is None else args.profile
    if do_profile and not profiling.available():
        do_profile = False
    spies: list[Any] = []
    profile_seconds = 0
    n = 1_000 if quick else 10_000
    spread = 5.0 if quick else 10.0
    lead = 5.0 if quick else 6.0
    timeout_minutes = 1.0
    report = c.Report("Timeout precision (bench/timeout_precision.py)", quick=quick)
    with c.workdir("timeouts", args.keep) as work:
        db = work / "bench.db"
        fake, fake_url = c.start_fake(work, latency=0.05)
        server = c.start_tertulia(work, db, fake_url, extra_env={
            "SESSION_TIMEOUT_MINUTES": str(timeout_minutes)})
        t0 = datetime.now(UTC) + timedelta(seconds=lead)
        step = spread / n
        done = seed.seed(db, n, first_phone=0,
                         expires_at=lambda i: t0 + timedelta(seconds=i * step),
                         timeout=timedelta(minutes=timeout_minutes))
        ids = done.ids
        first_id, last_id = ids[0], ids[-1]
        margin = (t0 - datetime.now(UTC)).total_seconds()
        c.progress(f"timeouts: seeded {n} in {done.rows_seconds + done.jobs_seconds:.1f} s; "
                   f"first due in {margin:.1f} s")
        if do_profile:
            profile_seconds = int(spread + 10)
            spies = [profiling.record(server.pid, BENCH_DIR / "profile-timeouts.txt",
                                      duration=profile_seconds, gil=True),
                     profiling.record(server.pid, BENCH_DIR / "profile-timeouts-wall.txt",
                                      duration=profile_seconds, idle=True)]
        seen: dict[int, float] = {}
        conn = c.db_connect(db)
        deadline = time.monotonic() + lead + spread + (120 if quick else 240)
        polls = 0
        rss_peak = server.rss_kb() or 0
        while time.monotonic() < deadline and len(seen) < n:
            polled_at = time.time()
            for (sid,) in conn.execute(
                    "SELECT id FROM sessions WHERE id BETWEEN ? AND ? AND closed_at IS NOT NULL",
                    (first_id, last_id)):
                if sid not in seen:
                    seen[sid] = polled_at
            polls += 1
            rss_peak = max(rss_peak, server.rss_kb() or 0)
            time.sleep(0.1)
        finished = len(seen) >= n
        for spy in spies:
            try:
                spy.wait(timeout=profile_seconds + 60)
            except Exception:
                spy.kill()
        pending_after = c.pending_outbox(server.port)
        rows = conn.execute(
            "SELECT s.id, s.expires_at, s.closed_at, s.close_reason, "
            "(SELECT count(*) FROM messages m WHERE m.session_id = s.id AND m.direction = 'out' "
            " AND m.created_at >= ?), "
            "(SELECT min(m.created_at) FROM messages m WHERE m.session_id = s.id "
            " AND m.direction = 'out' AND m.created_at >= ?) "
            "FROM sessions s WHERE s.id BETWEEN ? AND ?",
            (c.sa_time(t0 - timedelta(seconds=1)), c.sa_time(t0 - timedelta(seconds=1)),
             first_id, last_id)).fetchall()
        conn.close()
        server.stop()
        log = c.log_summary(server.proc.log_path)
        excerpts = c.log_excerpts(server.proc.log_path)
        fake.stop()

    lag_notice: list[float] = []
    lag_seen: list[float] = []
    closes: list[float] = []
    reasons: dict[str | None, int] = {}
    notices: dict[int, int] = {}
    expires_all = []
    for sid, expires, closed, reason, n_notice, notice_at in rows:
        exp = c.parse_sa_time(expires).timestamp()
        expires_all.append(exp)
        reasons[reason] = reasons.get(reason, 0) + 1
        notices[n_notice] = notices.get(n_notice, 0) + 1
        if notice_at is not None:
            lag_notice.append((c.parse_sa_time(notice_at).timestamp() - exp) * 1000)
        if closed is not None:
            closes.append(c.parse_sa_time(closed).timestamp())
        if sid in seen:
            lag_seen.append((seen[sid] - exp) * 1000)
    span = (max(seen.values()) - min(expires_all)) if seen else float("nan")
    close_span = (max(closes) - min(expires_all)) if closes else float("nan")
    report.settings({"sessions": n, "spread": f"{spread:g} s", "SESSION_TIMEOUT_MINUTES":
                     timeout_minutes, "other settings": "defaults (TWILIO_MAX_MPS=80, ...)",
                     "poll": "100 ms"})
    p = c.percentile
    report.table(
        ["lag from expires_at to", "p50 ms", "p90 ms", "p99 ms", "max ms", "sessions"],
        [["notice row (messages.created_at)", p(lag_notice, 50), p(lag_notice, 90),
          p(lag_notice, 99), max(lag_notice) if lag_notice else None, len(lag_notice)],
         ["commit seen by the poller (<= +100 ms)", p(lag_seen, 50), p(lag_seen, 90),
          p(lag_seen, 99), max(lag_seen) if lag_seen else None, len(lag_seen)]],
        caption="Lag")
    rate_seen = len(seen) / span if seen and span > 0 else float("nan")
    rate_closed = len(closes) / close_span if closes and close_span > 0 else float("nan")
    report.table(["measure", "value"], [
        ["all closed within the bound", "yes" if finished else f"NO ({len(seen)} of {n})"],
        ["expiries per second, first expires_at to last commit seen", f"{rate_seen:,.0f}"],
        ["expiries per second, first expires_at to last closed_at", f"{rate_closed:,.0f}"],
        ["busiest 1 s window of closed_at", f"{_max_window(closes):,}"],
        ["offered rate (sessions / spread)", f"{n / spread:,.0f}"],
        ["close reasons", ", ".join(f"{k}: {v:,}" for k, v in reasons.items())],
        ["timeout notices per session", ", ".join(f"{k}: {v:,}" for k, v in
                                                  sorted(notices.items()))],
        ["outbox pending at the end (notices wait for TWILIO_MAX_MPS=80)", pending_after],
        ["server RSS peak KB", rss_peak],
        ["seeding margin before the first expiry", f"{margin:.1f} s"],
        ["server log", str(log)],
    ], caption="Throughput and checks")
    lag99 = p(lag_notice, 99)
    seen99 = p(lag_seen, 99)
    report.table(["target (issue 5)", "goal", "measured", "met"], [
        ["timeout lag p99 (notice created_at)", "< 2 s", f"{lag99 / 1000:.2f} s",
         "yes" if lag99 < 2000 else "no"],
        ["timeout lag p99 (commit seen)", "< 2 s", f"{seen99 / 1000:.2f} s",
         "yes" if seen99 < 2000 else "no"],
    ], caption="Target")
    c.log_report(report, "Server", excerpts)
    if spies and all(spy.returncode == 0 for spy in spies):
        gil = profiling.analyse(BENCH_DIR / "profile-timeouts.txt")
        report.text(
            f"**Profile through the expiry window** (py-spy 100 Hz, --nonblocking, "
            f"{profile_seconds} s from just after seeding). GIL pass: {gil['samples']} "
            f"samples, the GIL held about {gil['samples'] / (profile_seconds * 100):.0%} of "
            f"the time. Files: `bench/profile-timeouts.txt` (GIL), "
            f"`bench/profile-timeouts-wall.txt` (all threads, waiting included).")
        profiling.render(report, gil, "GIL holders", sections=("threads", "categories", "self"))
        wall_file = BENCH_DIR / "profile-timeouts-wall.txt"
        wall = profiling.analyse(wall_file, thread="APScheduler: the scheduler")
        profiling.render(report, wall, "APScheduler's scheduler thread, wall clock, waiting "
                         "included", sections=("self", "inclusive"))
        for kind, label in (("APScheduler job executor", "APScheduler's job executor threads"),
                            ("group-commit", "the group-commit writer thread")):
            part = profiling.analyse(wall_file, thread=kind, top=8)
            if part["samples"]:
                profiling.render(report, part, f"{label}, wall clock, waiting included",
                                 sections=("self",))
    report.write(not args.no_write)
    return {"lag_notice_p99": lag99, "lag_seen_p99": seen99}


def main(argv: list[str] | None = None) -> None:
    run(c.bench_args(__doc__ or "", argv, _extra))


if __name__ == "__main__":
    main()
