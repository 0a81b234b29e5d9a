"""Benchmark 6: several workers on PostgreSQL, in one run (four parts, back to back).

1. **Webhooks.** Signed "mmm" webhooks (bench/loadgen.py, as bench/webhook.py: 1024
   phones mid-flow, round robin, keep-alive) at concurrency 8 and 32, 3 runs of 4 s
   each, medians; against the bare floor (bench/baseline_app.py ``bare``), tertulia with
   1 worker on SQLite, and tertulia on PostgreSQL with 1 and with 2 workers. Two
   workers are ``tertulia serve --workers 2``: one port, uvicorn's supervisor and its
   children; the load goes to that one port and the kernel spreads the connections.
   CPU per request is the CPU (user + system, /proc/<pid>/stat) of the server's whole
   process tree (supervisor + workers) over the run, divided by the requests; the
   PostgreSQL server's CPU (the postmaster of the bench's cluster and all its children:
   backends, WAL writer, checkpointer...) is reported beside it, separately.
2. **Timeout lag.** 10k sessions with ``expires_at`` spread over 10 s, seeded while the
   server runs (rows + APScheduler jobs written through APScheduler's own code, as
   bench/timeout_precision.py / bench/seed.py do; on PostgreSQL the rows are inserted
   with psycopg, ids from the database's sequences); lag = notice ``created_at`` -
   ``expires_at``. On SQLite (1 worker) and PostgreSQL (1 and 2 workers).
3. **Outbox with 3 workers** on PostgreSQL (``--workers 3``), the Twilio fake with
   50 ms latency and ``--record``; 400 phones x ("hola" + 5 "mmm") = 2400 replies;
   TWILIO_MAX_MPS=80. Analysis as bench/outbox.py: steady send rate, busiest 1 s
   sliding window, order per recipient (SIDs at the fake vs rows in id order),
   duplicates; plus how many sends each worker made (``claimed_by``).
4. **Fairness.** Phone A sends 1,000 webhooks ("hola" + 999 "mmm", 4 connections), so
   1,000 replies queue for A (one in flight at a time, 50 ms each at the fake: A alone
   drains at most 20/s). As soon as those webhooks are answered, 5 other phones each
   send "hola", 100 ms apart; latency = the fake's arrival of their reply - the moment
   the bench wrote their webhook (both CLOCK_MONOTONIC). A's backlog at that moment =
   A's replies queued - A's deliveries the fake had received by then. On PostgreSQL
   with 1 and 2 workers and on SQLite.

    python -m bench.workers [--quick] [--no-write] [--keep] [--only webhook,timeouts,...]

Needs a PostgreSQL server reachable at BENCH_PG (default
``postgresql://tertulia@127.0.0.1:55999``, trust auth); the bench creates and drops its
own ``bench_w_*`` databases there and runs ``tertulia db upgrade`` on each.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

if __package__ in (None, ""):  # run as `python bench/workers.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c
from bench import outbox as ob
from bench import seed
from bench.loadgen import webhook_params
from engine.scheduling.timeouts import POSTGRES_JOB_GRACE

PG = os.environ.get("BENCH_PG", "postgresql://tertulia@127.0.0.1:55999").rstrip("/")
PARTS = ("webhook", "timeouts", "outbox", "fairness")


# -- PostgreSQL ---------------------------------------------------------------------------


def pg_dsn(name: str) -> str:
    return f"{PG}/{name}"


def pg_url(name: str) -> str:
    return pg_dsn(name).replace("postgresql://", "postgresql+psycopg://", 1)


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(pg_dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@contextmanager
def pg_database(name: str, work: Path) -> Iterator[str]:
    """A fresh database, migrated with `tertulia db upgrade`; dropped afterwards."""
    assert name.startswith("bench_w_")
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    _admin(f"CREATE DATABASE {name}")
    try:
        env = c._clean_env()
        env["DATABASE_URL"] = pg_url(name)
        done = subprocess.run([c.PY, "-m", "engine", "db", "upgrade"], cwd=str(work), env=env,
                              capture_output=True, text=True, timeout=180, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"db upgrade failed: {done.stdout[-1000:]}{done.stderr[-1000:]}")
        yield pg_url(name)
    finally:
        with suppress(Exception):
            _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def postmaster_pid() -> int | None:
    """The pid of the postmaster serving the bench's cluster (parent of our backend)."""
    import psycopg

    try:
        with psycopg.connect(pg_dsn("postgres")) as conn:
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            return _ppids().get(int(backend))
    except Exception:
        return None


# -- process trees and CPU ---------------------------------------------------------------


def _ppids() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        out[int(entry)] = int(text.rsplit(")", 1)[1].split()[1])
    return out


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants, now."""
    ppids = _ppids()
    children: dict[int, list[int]] = defaultdict(list)
    for child, parent in ppids.items():
        children[parent].append(child)
    out, todo = [], [pid]
    for _ in range(10_000):  # bounded
        if not todo:
            break
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _cpu_with_reaped(pid: int) -> float:
    """utime + stime + cutime + cstime: the process's CPU and that of the children it
    has reaped (PostgreSQL's backends that ended, uvicorn workers replaced)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) of `pid`, its live descendants and the children they
    reaped, so a process that ends between two readings still counts."""
    if pid is None:
        return None
    return sum(_cpu_with_reaped(p) for p in tree(pid))


# -- servers ------------------------------------------------------------------------------


def start_server(work: Path, name: str, url: str, fake_url: str, *, workers: int = 1,
                 extra_env: dict[str, str] | None = None) -> c.Server:
    """`python -m engine serve [--workers N]` on DATABASE_URL=url, signed and sending."""
    port = c.free_port()
    env = c.tertulia_env(work / "unused.db", port, fake_url, extra_env)
    env["DATABASE_URL"] = url
    argv = [c.PY, "-m", "engine", "serve", "--port", str(port)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    spawned = time.monotonic()
    proc = c._spawn(name, argv, cwd=work, env=env, log_path=work / f"{name}.log")
    server = c.Server(proc, port, spawned, env=env)
    server.healthy_after = c._wait_healthy(proc, port, spawned, 180.0)
    if workers > 1:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(tree(server.pid)) - 1 < workers:
            time.sleep(0.2)
        # Every child answers /healthz once it has started; give the last one its start-up.
        ok = 0
        for _ in range(200):  # bounded
            if c.http_get(port, "/healthz", timeout=2.0)[0] == 200:
                ok += 1
                if ok >= 4 * workers:
                    break
            time.sleep(0.05)
        time.sleep(1.0)
    return server


def stop_server(server: c.Server) -> None:
    """SIGTERM to the supervisor (it stops its children); any child still there after
    the bound is killed by its pid."""
    pids = tree(server.pid)[1:]
    server.stop(timeout=30)
    for pid in pids:
        with suppress(ProcessLookupError, PermissionError):
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, 9)


# -- databases from the bench side -----------------------------------------------------


class Db:
    """Read queries on the server's database (SQLite file or PostgreSQL), `?` params."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pg = url.startswith("postgresql")
        if self.pg:
            import psycopg

            self.conn: Any = psycopg.connect(url.replace("+psycopg", ""), autocommit=True)
        else:
            self.conn = c.db_connect(Path(url.removeprefix("sqlite:///")))

    def all(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.pg:
            sql = sql.replace("?", "%s")
        return list(self.conn.execute(sql, params).fetchall())

    def one(self, sql: str, *params: Any) -> Any:
        return self.all(sql, *params)[0][0]

    def time_param(self, value: datetime) -> Any:
        return value.astimezone(UTC).replace(tzinfo=None) if self.pg else c.sa_time(value)

    @staticmethod
    def ts(value: Any) -> float:
        if isinstance(value, str):
            return c.parse_sa_time(value).timestamp()
        return float(value.replace(tzinfo=UTC).timestamp())

    def close(self) -> None:
        with suppress(Exception):
            self.conn.close()


def seed_pg(url: str, count: int, *, first_phone: int, expires_at: Callable[[int], datetime],
            timeout: timedelta, batch: int = 5_000) -> seed.Seeded:
    """bench/seed.py's rows on PostgreSQL (ids from the sequences), then its jobs."""
    import psycopg
    from psycopg.types.json import Json

    t0 = time.perf_counter()
    ids: list[int] = []
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        for lo in range(0, count, batch):
            idx = range(lo, min(count, lo + batch))
            phones = [f"+{c.PHONE_BASE + first_phone + i}" for i in idx]
            exps = [expires_at(i).astimezone(UTC).replace(tzinfo=None) for i in idx]
            opened = [e - timeout for e in exps]
            rows = conn.execute(
                "INSERT INTO sessions (channel, phone, flow, state, started_at, "
                "last_inbound_at, expires_at, closed_at, close_reason, version, context) "
                "SELECT 'whatsapp', p, 'trial', 'greeting', o, o, e, NULL, NULL, 2, %s "
                "FROM unnest(%s::text[], %s::timestamp[], %s::timestamp[]) AS u(p, o, e) "
                "RETURNING id, phone", (Json({}), phones, opened, exps)).fetchall()
            by_phone = {p: sid for sid, p in rows}
            sids = [by_phone[p] for p in phones]
            conn.execute(
                "INSERT INTO session_events (session_id, at, from_state, to_state, trigger, "
                "detail) SELECT s, o, NULL, 'greeting', 'start', 'flow trial' "
                "FROM unnest(%s::int[], %s::timestamp[]) AS u(s, o)", (sids, opened))
            n = len(sids)
            conn.execute(
                "INSERT INTO messages (session_id, channel, direction, twilio_sid, body, "
                "body_redacted, status, error_code, attempts, created_at, sent_at, "
                "next_attempt_at) SELECT s, 'whatsapp', d, t, b, NULL, st, NULL, a, o, so, NULL "
                "FROM unnest(%s::int[], %s::text[], %s::text[], %s::text[], %s::text[], "
                "%s::int[], %s::timestamp[], %s::timestamp[]) AS u(s, d, t, b, st, a, o, so)",
                (sids + sids, ["in"] * n + ["out"] * n,
                 [f"SMseed{uuid.uuid4().hex[:26]}" for _ in range(n)]
                 + [f"SM{uuid.uuid4().hex}" for _ in range(n)],
                 ["hola"] * n + [seed.GREETING] * n, ["received"] * n + ["queued"] * n,
                 [0] * n + [1] * n, opened + opened, [None] * n + opened))
            conn.commit()
            ids.extend(sids)
    t1 = time.perf_counter()
    seed.arm_jobs(None, [(sid, expires_at(i)) for i, sid in enumerate(ids)], url=url,
                  grace=POSTGRES_JOB_GRACE)
    return seed.Seeded(ids, t1 - t0, time.perf_counter() - t1)


# -- part 1: webhooks ----------------------------------------------------------------------


def _open_sessions(port: int, phones: int) -> dict[str, Any]:
    opened = c.run_load(c.load_spec(port, concurrency=16, duration=120, phones=(0, phones),
                                    texts=["hola"], order="rounds", n=phones))
    c.run_load(c.load_spec(port, concurrency=8, duration=1.0, phones=(0, phones),
                           texts=["mmm"], seed=99))
    return opened


def part_webhook(work: Path, quick: bool) -> dict[str, Any]:
    levels = [8, 32]
    reps = 1 if quick else 3
    duration = 1.0 if quick else 4.0
    phones = 128 if quick else 1024
    pm = postmaster_pid()
    env600 = {"SESSION_TIMEOUT_MINUTES": "600"}
    results: dict[str, dict[int, dict[str, Any]]] = {}
    extras: dict[str, dict[str, Any]] = {}
    fake, fake_url = c.start_fake(work, latency=0.05)
    try:
        targets: list[tuple[str, Callable[[], Any], Any]] = [
            ("bare (floor)", lambda: c.start_baseline(work, "bare"), None),
            ("SQLite, 1 worker", lambda: start_server(
                work, "wh-sqlite", f"sqlite:///{work / 'wh.db'}", fake_url, extra_env=env600),
             None),
            ("PostgreSQL, 1 worker", None, ("bench_w_wh1", 1)),
            ("PostgreSQL, 2 workers", None, ("bench_w_wh2", 2)),
        ]
        for name, start, pg in targets:
            c.progress(f"webhook: {name}")
            with (pg_database(pg[0], work) if pg else _nothing()) as url:
                server = start() if start else start_server(
                    work, f"wh-{pg[0]}", url, fake_url, workers=pg[1], extra_env=env600)
                try:
                    opened = _open_sessions(server.port, phones)
                    out: dict[int, dict[str, Any]] = {}
                    for level in levels:
                        pending_before = c.pending_outbox(server.port)
                        runs = []
                        for rep in range(reps):
                            spec = c.load_spec(server.port, concurrency=level, duration=duration,
                                               phones=(0, phones), texts=["mmm"],
                                               order="round_robin", seed=rep)
                            s0, p0 = tree_cpu(server.pid), tree_cpu(pm)
                            run = c.run_load(spec)
                            s1, p1 = tree_cpu(server.pid), tree_cpu(pm)
                            if run["requests"]:
                                run["cpu_us"] = 1e6 * ((s1 or 0) - (s0 or 0)) / run["requests"]
                                run["pg_cpu_us"] = (1e6 * (p1 - p0) / run["requests"]
                                                    if p0 is not None and p1 is not None
                                                    else None)
                            runs.append(run)
                            c.progress(f"  c={level} rep {rep + 1}: {run['rps']:.0f} req/s, "
                                       f"p99 {run['lat_ms']['p99']:.1f} ms, "
                                       f"{run.get('cpu_us', 0):.0f} µs/req server, "
                                       f"{run.get('pg_cpu_us') or 0:.0f} µs/req postgres")
                        s = c.summarize_runs(runs)
                        s["pg_cpu_us"] = c.median(r.get("pg_cpu_us") for r in runs)
                        s["pending_before"] = pending_before
                        out[level] = s
                    results[name] = out
                    extras[name] = {"opened": opened, "procs": len(tree(server.pid)),
                                    "pending": c.pending_outbox(server.port)}
                finally:
                    stop_server(server)
                extras[name]["log"] = c.log_summary(server.proc.log_path)
                extras[name]["excerpts"] = c.log_excerpts(server.proc.log_path)
    finally:
        fake.stop()
    return {"results": results, "extras": extras, "levels": levels, "reps": reps,
            "duration": duration, "phones": phones}


@contextmanager
def _nothing() -> Iterator[str]:
    yield ""


# -- part 2: timeouts ------------------------------------------------------------------------


def part_timeouts(work: Path, quick: bool) -> list[dict[str, Any]]:
    n = 1_000 if quick else 10_000
    spread, lead = (5.0, 5.0) if quick else (10.0, 8.0)
    timeout = timedelta(minutes=1)
    out = []
    fake, fake_url = c.start_fake(work, latency=0.05)
    try:
        for label, pg, workers in (("SQLite, 1 worker", None, 1),
                                   ("PostgreSQL, 1 worker", "bench_w_to1", 1),
                                   ("PostgreSQL, 2 workers", "bench_w_to2", 2)):
            c.progress(f"timeouts: {label}")
            with (pg_database(pg, work) if pg else _nothing()) as url:
                url = url or f"sqlite:///{work / 'timeouts.db'}"
                server = start_server(work, f"to-{pg or 'sqlite'}", url, fake_url,
                                      workers=workers,
                                      extra_env={"SESSION_TIMEOUT_MINUTES": "1"})
                db = Db(url)
                try:
                    t0 = datetime.now(UTC) + timedelta(seconds=lead)
                    step = spread / n

                    def exp(i: int, t0: datetime = t0, step: float = step) -> datetime:
                        return t0 + timedelta(seconds=i * step)

                    if pg:
                        done = seed_pg(url, n, first_phone=0, expires_at=exp, timeout=timeout)
                    else:
                        done = seed.seed(work / "timeouts.db", n, first_phone=0,
                                         expires_at=exp, timeout=timeout)
                    margin = (t0 - datetime.now(UTC)).total_seconds()
                    c.progress(f"  seeded {n} in {done.rows_seconds + done.jobs_seconds:.1f} s;"
                               f" first due in {margin:.1f} s")
                    lo, hi = min(done.ids), max(done.ids)
                    deadline = time.monotonic() + lead + spread + (60 if quick else 180)
                    closed = 0
                    cpu0 = tree_cpu(server.pid)
                    while time.monotonic() < deadline:
                        closed = int(db.one("SELECT count(*) FROM sessions WHERE id BETWEEN ? "
                                            "AND ? AND closed_at IS NOT NULL", lo, hi))
                        if closed >= n:
                            break
                        time.sleep(0.5)
                    cpu1 = tree_cpu(server.pid)
                    pending_end = c.pending_outbox(server.port)
                    since = db.time_param(t0 - timedelta(seconds=1))
                    rows = db.all(
                        "SELECT s.id, s.expires_at, s.closed_at, s.close_reason, "
                        "(SELECT count(*) FROM messages m WHERE m.session_id = s.id AND "
                        " m.direction = 'out' AND m.created_at >= ?), "
                        "(SELECT min(m.created_at) FROM messages m WHERE m.session_id = s.id "
                        " AND m.direction = 'out' AND m.created_at >= ?) "
                        "FROM sessions s WHERE s.id BETWEEN ? AND ?", since, since, lo, hi)
                finally:
                    db.close()
                    stop_server(server)
            lags, closes, exps = [], [], []
            reasons: dict[Any, int] = defaultdict(int)
            notices: dict[int, int] = defaultdict(int)
            for _sid, e, cl, reason, n_notice, notice_at in rows:
                et = Db.ts(e)
                exps.append(et)
                reasons[reason] += 1
                notices[int(n_notice)] += 1
                if notice_at is not None:
                    lags.append((Db.ts(notice_at) - et) * 1000)
                if cl is not None:
                    closes.append(Db.ts(cl))
            out.append({
                "label": label, "n": n, "closed": closed, "lags": lags,
                "rate": len(closes) / (max(closes) - min(exps)) if closes else float("nan"),
                "longest_gap": max((b - a for a, b in itertools.pairwise(sorted(closes))),
                                   default=float("nan")),
                "last_close_after": (max(closes) - max(exps)) if closes else float("nan"),
                "pending_end": pending_end,
                "reasons": dict(reasons), "notices": dict(sorted(notices.items())),
                "margin": margin, "seed_s": done.rows_seconds + done.jobs_seconds,
                "cpu_s": (cpu1 or 0) - (cpu0 or 0),
                "log": c.log_summary(server.proc.log_path),
                "excerpts": c.log_excerpts(server.proc.log_path),
            })
    finally:
        fake.stop()
    return out


# -- part 3: outbox with 3 workers ------------------------------------------------------------


def part_outbox(work: Path, quick: bool) -> dict[str, Any]:
    phones, per_phone, max_mps, workers = 400, (2 if quick else 6), 80, 3
    expected = phones * per_phone
    record = work / "outbox.jsonl"
    fake, fake_url = c.start_fake(work, latency=0.05, record=record)
    try:
        with pg_database("bench_w_outbox", work) as url:
            server = start_server(work, "outbox-pg3", url, fake_url, workers=workers,
                                  extra_env={"SESSION_TIMEOUT_MINUTES": "600",
                                             "TWILIO_MAX_MPS": str(max_mps)})
            db = Db(url)
            try:
                texts = ["hola"] + ["mmm"] * (per_phone - 1)
                load = c.run_load(c.load_spec(server.port, concurrency=16, duration=300,
                                              phones=(0, phones), texts=texts, order="rounds",
                                              n=expected), limit=600)
                c.progress(f"outbox: {load['ok']} webhooks in {load['elapsed_s']:.1f} s; "
                           f"waiting for {expected} sends")
                deadline = time.monotonic() + expected / max_mps + 90
                while time.monotonic() < deadline and ob._count_201(record) < expected:
                    time.sleep(0.5)
                time.sleep(1.5)  # a late duplicate would show up here
                pending = c.pending_outbox(server.port)
                rows = db.all("SELECT s.phone, m.id, m.twilio_sid, m.status, m.claimed_by "
                              "FROM messages m JOIN sessions s ON s.id = m.session_id "
                              "WHERE m.direction = 'out' ORDER BY m.id")
            finally:
                db.close()
                stop_server(server)
    finally:
        fake.stop()
    recs = ob._records(record)
    ok = sorted((r for r in recs if r["status_code"] == 201), key=lambda r: r["at"])
    statuses: dict[int, int] = defaultdict(int)
    for r in recs:
        statuses[r["status_code"]] += 1
    times = [r["at"] for r in ok]
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    steady = [t for t in times if times[0] + 1.0 <= t < times[-1] - 1.0]
    steady_rate = len(steady) / (span - 2.0) if span > 2 else float("nan")
    best, over, best_at = ob._windows(times, max_mps)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    db_order: dict[str, list[str]] = defaultdict(list)
    per_worker: dict[str, int] = defaultdict(int)
    for phone, _id, sid, _status, worker in rows:
        if sid:
            db_order[f"whatsapp:{phone}"].append(sid)
            per_worker[worker or "?"] += 1
    fake_order: dict[str, list[str]] = defaultdict(list)
    for r in ok:
        fake_order[r["to"]].append(r["sid"])
    out_of_order = sum(1 for to, sids in fake_order.items() if db_order.get(to) != sids)
    # The fake gives every accepted request a SID of its own, so a row sent twice shows
    # as a delivery whose SID no outbound row kept (and more deliveries than rows).
    db_sids = {r[2] for r in rows if r[2]}
    duplicates = sum(1 for r in ok if r["sid"] not in db_sids)
    extra_sends = len(ok) - len(db_sids)
    return {
        "load": load, "expected": expected, "delivered": len(ok), "statuses": dict(statuses),
        "span": span, "overall": (len(times) - 1) / span if span == span and span > 0 else 0,
        "steady": steady_rate, "best": best, "over": over, "best_at": best_at,
        "min_gap_ms": min(gaps) * 1000 if gaps else None,
        "median_gap_ms": c.percentile(gaps, 50) * 1000 if gaps else None,
        "stalls": ob._stalls(gaps, 1.0 / max_mps), "out_of_order": out_of_order,
        "recipients": len(fake_order), "duplicates": duplicates,
        "extra_sends": extra_sends,
        "unsent": sum(1 for r in rows if not r[2]), "pending": pending,
        "per_worker": dict(per_worker), "max_mps": max_mps, "workers": workers,
        "log": c.log_summary(server.proc.log_path),
        "excerpts": c.log_excerpts(server.proc.log_path),
    }


# -- part 4: fairness -----------------------------------------------------------------------


def _post(port: int, phone: str, text: str) -> int:
    url = f"http://{c.HOST}:{port}/twilio/whatsapp"
    params = webhook_params(phone, text, f"SM{uuid.uuid4().hex}", c.ACCOUNT_SID)
    conn = http.client.HTTPConnection(c.HOST, port, timeout=30)
    try:
        conn.request("POST", "/twilio/whatsapp", body=urlencode(params), headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": c.sign(url, params)})
        response = conn.getresponse()
        response.read()
        return int(response.status)
    finally:
        conn.close()


def part_fairness(work: Path, quick: bool) -> list[dict[str, Any]]:
    backlog_n = 200 if quick else 1_000
    others = 5
    out = []
    for label, pg, workers in (("PostgreSQL, 1 worker", "bench_w_fair1", 1),
                               ("PostgreSQL, 2 workers", "bench_w_fair2", 2),
                               ("SQLite, 1 worker", None, 1)):
        c.progress(f"fairness: {label}")
        record = work / f"fair-{pg or 'sqlite'}.jsonl"
        fake, fake_url = c.start_fake(work, latency=0.05, record=record)
        try:
            with (pg_database(pg, work) if pg else _nothing()) as url:
                url = url or f"sqlite:///{work / 'fair.db'}"
                server = start_server(work, f"fair-{pg or 'sqlite'}", url, fake_url,
                                      workers=workers,
                                      extra_env={"SESSION_TIMEOUT_MINUTES": "600"})
                db = Db(url)
                try:
                    a_load = c.run_load(c.load_spec(
                        server.port, concurrency=4, duration=120, phones=(0, 1),
                        texts=["hola"] + ["mmm"] * (backlog_n - 1), order="rounds",
                        n=backlog_n), limit=300)
                    sent: dict[str, float] = {}
                    codes = []
                    for k in range(1, others + 1):
                        phone = c.phone(k)
                        sent[f"whatsapp:{phone}"] = time.monotonic()
                        codes.append(_post(server.port, phone, "hola"))
                        time.sleep(0.1)
                    a_to = f"whatsapp:{c.phone(0)}"
                    arrived: dict[str, float] = {}
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline and len(arrived) < others:
                        for r in ob._records(record):
                            if r["status_code"] == 201 and r["to"] in sent \
                                    and r["to"] not in arrived:
                                arrived[r["to"]] = r["at"]
                        time.sleep(0.1)
                    a_queued = int(db.one(
                        "SELECT count(*) FROM messages m JOIN sessions s ON s.id = "
                        "m.session_id WHERE m.direction = 'out' AND s.phone = ?", c.phone(0)))
                    a_pending_now = int(db.one(
                        "SELECT count(*) FROM messages m JOIN sessions s ON s.id = "
                        "m.session_id WHERE m.direction = 'out' AND s.phone = ? AND "
                        "m.status IN ('pending', 'sending') AND m.twilio_sid IS NULL",
                        c.phone(0)))
                finally:
                    db.close()
                    stop_server(server)
        finally:
            fake.stop()
        recs = [r for r in ob._records(record) if r["status_code"] == 201]
        a_times = sorted(r["at"] for r in recs if r["to"] == a_to)

        def a_backlog(at: float, a_times: list[float] = a_times, q: int = a_queued) -> int:
            return q - sum(1 for t in a_times if t <= at)

        first_send = min(sent.values())
        lat = {to: (arrived[to] - t0) * 1000 if to in arrived else None
               for to, t0 in sent.items()}
        out.append({
            "label": label, "a_load": a_load, "a_queued": a_queued, "codes": codes,
            "a_backlog_at_first": a_backlog(first_send),
            "a_backlog_at_last": a_backlog(max(arrived.values())) if arrived else None,
            "a_pending_after": a_pending_now, "latencies": lat,
            "a_rate": (len([t for t in a_times if t >= a_times[0] + 1.0])
                       / max(1e-9, a_times[-1] - a_times[0] - 1.0)) if len(a_times) > 20
            else None,
            "log": c.log_summary(server.proc.log_path),
            "excerpts": c.log_excerpts(server.proc.log_path),
        })
    return out


# -- report ---------------------------------------------------------------------------------


def _r(x: float | None, digits: int = 0) -> str:
    return "–" if x is None or x != x else f"{x:,.{digits}f}"


def report(rep: c.Report, res: dict[str, Any], loads: list[str]) -> None:
    pg_settings = "?"
    with suppress(Exception):
        import psycopg

        with psycopg.connect(pg_dsn("postgres")) as conn:
            got = {k: conn.execute(f"SHOW {k}").fetchone()[0]  # type: ignore[index]
                   for k in ("server_version", "fsync", "synchronous_commit",
                             "max_connections", "shared_buffers")}
        pg_settings = ", ".join(f"{k}={v}" for k, v in got.items())
    rep.settings({"PostgreSQL": pg_settings, "fake latency": "50 ms",
                  "tertulia env": "defaults (TWILIO_MAX_MPS=80, LOG_LEVEL=INFO) + "
                                  "SESSION_TIMEOUT_MINUTES=600 (1 in part 2)",
                  "several workers": "`tertulia serve --workers N` (one port; CPU = the "
                                     "supervisor + its children, /proc)"})
    rep.text("Load average (1 min) at the start of each part: " + ", ".join(loads)
             + " (2 CPUs; other jobs share the host).")
    if "webhook" in res:
        w = res["webhook"]
        rows, bare = [], w["results"].get("bare (floor)", {})
        for name, levels in w["results"].items():
            for level, s in levels.items():
                b = bare.get(level)
                rows.append([name, level, s.get("pending_before", "–"), s["rps"], s["p50"],
                             s["p99"], _r(s["cpu_us"]),
                             _r(s["pg_cpu_us"]) if "PostgreSQL" in name else
                             f"({_r(s['pg_cpu_us'])})",
                             f"{s['rps'] / b['rps']:.3f}" if b else "–",
                             f"{s['cpu_us'] / b['cpu_us']:.2f}" if b and s["cpu_us"] else "–",
                             s["requests"], s["non200"]])
        rep.table(["server", "c", "outbox pending before", "req/s", "p50 ms", "p99 ms",
                   "server CPU µs/req",
                   "postgres CPU µs/req", "req/s / bare", "CPU/req / bare", "requests",
                   "non-200 / errors"], rows,
                  caption=f"1. Webhooks: medians of {w['reps']} runs of {w['duration']:g} s, "
                          f"{w['phones']} phones mid-flow, 'mmm' round robin (postgres CPU in "
                          f"brackets on non-PostgreSQL rows: other activity on the cluster, "
                          f"noise)")
        r = w["results"]
        one, two, sq = (r.get("PostgreSQL, 1 worker"), r.get("PostgreSQL, 2 workers"),
                        r.get("SQLite, 1 worker"))
        tgt = []
        for level in w["levels"]:
            if one and two:
                ratio = two[level]["cpu_us"] / one[level]["cpu_us"]
                tgt.append([f"PG CPU/req, 2 workers vs 1 (c={level})", "<= 1.2x",
                            f"{ratio:.2f}x ({two[level]['cpu_us']:.0f} vs "
                            f"{one[level]['cpu_us']:.0f} µs)", "yes" if ratio <= 1.2 else "no"])
                both = (two[level]["cpu_us"] + two[level]["pg_cpu_us"]) / \
                    (one[level]["cpu_us"] + one[level]["pg_cpu_us"])
                tgt.append([f"same, server + postgres CPU (c={level})", "(info)",
                            f"{both:.2f}x", ""])
        prev = {8: (0.157, 1946), 32: (0.210, 1368)}  # RESULTS.md, webhook.py of 2026-12-01
        for level in w["levels"]:
            if sq and level in prev and bare:
                frac = sq[level]["rps"] / bare[level]["rps"]
                tgt.append([f"SQLite 1 worker, fraction of bare (c={level})",
                            f">= {prev[level][0]:.3f} (last webhook.py run)", f"{frac:.3f}",
                            "yes" if frac >= prev[level][0] else "no"])
                tgt.append([f"SQLite 1 worker, CPU/req (c={level})",
                            f"<= {prev[level][1]} µs (last webhook.py run)",
                            f"{sq[level]['cpu_us']:.0f} µs",
                            "yes" if sq[level]["cpu_us"] <= prev[level][1] else "no"])
        rep.table(["target", "goal", "measured", "met"], tgt, caption="1. Targets")
        rep.table(["server", "'hola' opening req/s (c=16)", "processes in its tree",
                   "outbox pending at the end", "log"],
                  [[n, e["opened"]["rps"], e["procs"], e["pending"], str(e["log"])]
                   for n, e in w["extras"].items()], caption="1. Around the runs")
        for n, e in w["extras"].items():
            c.log_report(rep, f"Webhooks, {n}", e["excerpts"])
    if "timeouts" in res:
        p = c.percentile
        rows = []
        for t in res["timeouts"]:
            rows.append([t["label"], t["n"], _r(p(t["lags"], 50)), _r(p(t["lags"], 90)),
                         _r(p(t["lags"], 99)), _r(max(t["lags"]) if t["lags"] else None),
                         len(t["lags"]), f"{t['closed']:,} / {t['n']:,}", _r(t["rate"]),
                         ", ".join(f"{k}: {v:,}" for k, v in t["reasons"].items()),
                         ", ".join(f"{k}: {v:,}" for k, v in t["notices"].items()),
                         f"{t['longest_gap']:.2f} s", f"{t['last_close_after']:.1f} s",
                         t["pending_end"], f"{t['margin']:.1f} s", f"{t['cpu_s']:.1f}",
                         "yes" if t["lags"] and p(t["lags"], 99) < 250 else "**no**"])
        rep.table(["backend", "sessions", "lag p50 ms", "p90 ms", "p99 ms", "max ms",
                   "notices", "closed", "closes/s", "close reasons", "notices per session",
                   "longest pause between two closes", "last close after the last "
                   "expires_at", "outbox pending at the end", "seed margin",
                   "server CPU s (window)", "p99 < 250 ms"], rows,
                  caption="2. Timeout lag: notice created_at - expires_at, 10k due within "
                          "10 s (SESSION_TIMEOUT_MINUTES=1)")
        for t in res["timeouts"]:
            c.log_report(rep, f"Timeouts, {t['label']}", t["excerpts"])
            if t["log"].get("error") or t["log"].get("traceback"):
                rep.text(f"Timeouts, {t['label']}: log {t['log']}")
    if "outbox" in res:
        o = res["outbox"]
        rep.table(["measure", "value"], [
            ["webhooks answered 200", f"{o['load']['ok']:,} of {o['expected']:,} in "
                                      f"{o['load']['elapsed_s']:.1f} s"],
            ["delivered (201 at the fake)", f"{o['delivered']:,}"],
            ["other answers at the fake", ", ".join(f"{k}: {v}" for k, v in
                                                    sorted(o["statuses"].items()) if k != 201)
             or "none"],
            ["first to last delivery", f"{o['span']:.2f} s"],
            ["sends/s, whole run", f"{o['overall']:.2f}"],
            ["sends/s, steady part (first and last second left out)", f"{o['steady']:.2f}"],
            ["busiest 1 s sliding window", f"{o['best']} (at {o['best_at']:.2f} s)"],
            [f"arrivals closing a 1 s window above {o['max_mps']}", f"{o['over']}"],
            ["smallest / median gap", f"{_r(o['min_gap_ms'], 2)} / {_r(o['median_gap_ms'], 2)}"
                                      " ms (1/80 s = 12.5 ms)"],
            ["stalls (gaps over 50 ms): count, time lost, longest", o["stalls"]],
            ["recipients out of queue order", f"{o['out_of_order']} of {o['recipients']}"],
            ["deliveries whose SID no outbound row kept (sent twice)", f"{o['duplicates']}"],
            ["deliveries minus outbound rows with a SID", f"{o['extra_sends']}"],
            ["outbound rows without a SID at the end", f"{o['unsent']}"],
            ["outbox pending at the end", f"{o['pending']}"],
            ["sends per worker (claimed_by)", ", ".join(
                f"{v:,}" for v in sorted(o["per_worker"].values(), reverse=True))],
            ["server log", str(o["log"])],
        ], caption=f"3. Outbox: PostgreSQL, {o['workers']} workers, TWILIO_MAX_MPS="
                   f"{o['max_mps']}, 400 phones x 6 replies")
        lo = 0.97 * o["max_mps"]
        rep.table(["target", "goal", "measured", "met"], [
            ["never above TWILIO_MAX_MPS in any 1 s", f"<= {o['max_mps']}", f"{o['best']}",
             "yes" if o["best"] <= o["max_mps"] else "**no**"],
            ["steady rate within 3% of 80", f">= {lo:.1f}/s", f"{o['steady']:.2f}/s",
             "yes" if o["steady"] >= lo else "**no**"],
            ["order per recipient", "kept", f"{o['out_of_order']} out of order",
             "yes" if o["out_of_order"] == 0 else "**no**"],
            ["duplicates", "0", f"{o['duplicates']}", "yes" if o["duplicates"] == 0 else "**no**"],
        ], caption="3. Targets")
        c.log_report(rep, "Outbox (3 workers)", o["excerpts"])
    if "fairness" in res:
        rows = []
        for f in res["fairness"]:
            lats = [v for v in f["latencies"].values() if v is not None]
            rows.append([f["label"], f"{f['a_load']['ok']:,} in {f['a_load']['elapsed_s']:.1f} s",
                         f["a_queued"], f["a_backlog_at_first"],
                         ", ".join(_r(v) for v in f["latencies"].values()),
                         _r(max(lats)) if len(lats) == len(f["latencies"]) else "**missing**",
                         f["a_backlog_at_last"], _r(f["a_rate"], 1),
                         "yes" if len(lats) == len(f["latencies"]) and max(lats) < 1000
                         and (f["a_backlog_at_last"] or 0) > 0 else "**no**"])
        rep.table(["backend", "A's webhooks (c=4)", "A's replies queued",
                   "A's backlog when the 5 were sent", "5 phones: webhook to reply at the "
                   "fake, ms", "max ms", "A's backlog when the last of the 5 arrived",
                   "A's send rate /s", "< 1 s with A backlogged"], rows,
                  caption="4. Fairness: one phone with a backlog, five others with one "
                          "message each")
        for f in res["fairness"]:
            c.log_report(rep, f"Fairness, {f['label']}", f["excerpts"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    parts = [p for p in (args.only.split(",") if args.only else PARTS) if p]
    rep = c.Report("Several workers on PostgreSQL (bench/workers.py)", quick=args.quick)
    res: dict[str, Any] = {}
    loads: list[str] = []
    with c.workdir("workers", args.keep) as work:
        for part in PARTS:
            if part not in parts:
                continue
            started = time.monotonic()
            loads.append(f"{part} {os.getloadavg()[0]:.2f}")
            try:
                res[part] = globals()[f"part_{part}"](work, args.quick)
            except Exception as exc:  # reported, and the other parts still run
                import traceback

                traceback.print_exc()
                rep.text(f"**Part {part} failed**: `{type(exc).__name__}: {str(exc)[:600]}`")
            c.progress(f"{part}: {time.monotonic() - started:.0f} s")
        with suppress(Exception):
            (work / "results.json").write_text(json.dumps(res, default=str))
    report(rep, res, loads)
    rep.write(not args.no_write)
    return res


def main(argv: list[str] | None = None) -> None:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--only", default="", help=f"comma-separated, of {PARTS}")

    run(c.bench_args(__doc__ or "", argv, extra))


if __name__ == "__main__":
    main()
