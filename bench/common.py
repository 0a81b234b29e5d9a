"""Shared pieces of the benchmarks: processes, signing, load, percentiles, results.

Every process here is started by the benchmark itself and stopped by its pid (SIGTERM,
then SIGKILL after a bound); nothing is matched by name. Only loopback addresses.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import http.client
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.loadgen import percentile

__all__ = [
    "ACCOUNT_SID", "AUTH_TOKEN", "HOST", "PHONE_BASE", "PY", "RESULTS", "ROOT", "Proc",
    "Report", "Server", "bench_args", "db_connect", "healthz", "load_spec", "machine_info",
    "median", "percentile", "phone", "rss_kb", "run_load", "sa_time", "sign",
    "start_baseline", "start_fake", "start_tertulia", "wait_drained", "workdir",
]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
FLOWS_DIR = ROOT / "flows"
PY = sys.executable
HOST = "127.0.0.1"
# Credentials-shaped values, so the server runs for real: signed webhooks, real sends.
ACCOUNT_SID = "AC" + "5f3c0e9a" * 4
AUTH_TOKEN = "b7e2d94c1a0f8e3b6d5c4a2918f7e6d0"
SENDER = "whatsapp:+14155238886"
PHONE_BASE = 5491100000000  # +5491100000000, +5491100000001, ... (Argentine mobiles)

# Everything tertulia reads, removed from the inherited environment so a developer's
# shell or .env cannot change what a benchmark measures.
_TERTULIA_VARS = (
    "DATABASE_URL", "FLOWS_DIR", "DEFAULT_FLOW", "SESSION_TIMEOUT_MINUTES",
    "SESSION_WARNING_SECONDS", "SWEEP_INTERVAL_SECONDS", "STATS_INTERVAL_MINUTES",
    "TRIAL_DURATION_HOURS", "TRIAL_COOLDOWN_DAYS", "CREDENTIAL_PROVIDER", "INTENT_DETECTOR",
    "PUBLIC_BASE_URL", "OUTBOX_MAX_ATTEMPTS", "SQLITE_SYNCHRONOUS", "LOG_LEVEL", "LOG_FORMAT",
    "TIMEOUT_REARM",
    "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy",
)

_started: list[Proc] = []


def phone(i: int) -> str:
    return f"+{PHONE_BASE + i}"


def sign(url: str, params: dict[str, str]) -> str:
    """X-Twilio-Signature for a POST of `params` to `url`, as Twilio computes it."""
    from twilio.request_validator import RequestValidator

    return str(RequestValidator(AUTH_TOKEN).compute_signature(url, params))


def median(values: Iterable[float]) -> float:
    data = [v for v in values if v is not None]
    return statistics.median(data) if data else float("nan")


def sa_time(value: datetime) -> str:
    """A UTC datetime as SQLAlchemy's SQLite DateTime stores it (what tertulia writes)."""
    value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def parse_sa_time(text: str) -> datetime:
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
    return datetime.strptime(text, fmt).replace(tzinfo=UTC)


def db_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


# -- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL if it is still there after `timeout` seconds."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        if self in _started:
            _started.remove(self)
        return self.popen.returncode

    def kill9(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(10)

    def rss_kb(self) -> int | None:
        return rss_kb(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _spawn(name: str, argv: Sequence[str], *, cwd: Path, env: dict[str, str] | None,
           log_path: Path, stdout_pipe: bool = False) -> Proc:
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it; closed below
    try:
        popen = subprocess.Popen(
            list(argv), cwd=str(cwd), env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log if stdout_pipe else subprocess.STDOUT,
        )
    finally:
        log.close()
    proc = Proc(name, popen, log_path)
    _started.append(proc)
    return proc


@atexit.register
def _cleanup() -> None:
    for proc in list(_started):
        with contextlib.suppress(Exception):
            proc.stop(timeout=10)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, all its threads (from /proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def start_fake(work: Path, *, latency: float = 0.0, record: Path | None = None,
               timeout: float = 20.0) -> tuple[Proc, str]:
    """The Twilio fake from the tests, in its own process, via its CLI."""
    argv = [PY, "-m", "tests.support.twilio_fake", "--port", "0", "--latency", str(latency)]
    if record is not None:
        argv += ["--record", str(record)]
    proc = _spawn("fake", argv, cwd=ROOT, env=_clean_env(), log_path=work / "fake.log",
                  stdout_pipe=True)
    assert proc.popen.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.popen.stdout], [], [], 0.2)
        if ready:
            line = proc.popen.stdout.readline().decode().strip()
            if line.startswith("listening "):
                return proc, line.split(" ", 1)[1]
        if not proc.alive:
            break
    proc.stop()
    raise RuntimeError(f"the Twilio fake did not start: {proc.log_tail()}")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in _TERTULIA_VARS and not k.startswith("TWILIO_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                     else "")
    return env


def tertulia_env(db_path: Path, port: int, fake_url: str, extra: dict[str, str] | None) -> \
        dict[str, str]:
    env = _clean_env()
    env.update({
        "DATABASE_URL": f"sqlite:///{db_path}",
        "FLOWS_DIR": str(FLOWS_DIR),
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_WHATSAPP_FROM": SENDER,
        "PUBLIC_BASE_URL": f"http://{HOST}:{port}",
        "TWILIO_API_BASE_URL": fake_url,
        # The load sends many messages per phone: the per-phone rate is still counted
        # on every message (its cost is in the figures) but never reached.
        "RATE_LIMIT_MESSAGES": "100000000",
    })
    env.update(extra or {})
    return env


@dataclass
class Server:
    proc: Proc
    port: int
    spawned_at: float  # time.monotonic()
    healthy_after: float | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kb(self) -> int | None:
        return self.proc.rss_kb()

    def stop(self, timeout: float = 30.0) -> int | None:
        return self.proc.stop(timeout)


def _wait_healthy(proc: Proc, port: int, spawned: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n"
                               f"{proc.log_tail()}")
        status, _ = http_get(port, "/healthz", timeout=1.0)
        if status == 200:
            return time.monotonic() - spawned
        time.sleep(0.02)
    raise RuntimeError(f"{proc.name} not healthy after {timeout} s:\n{proc.log_tail()}")


def start_tertulia(work: Path, db_path: Path, fake_url: str, *,
                   extra_env: dict[str, str] | None = None, port: int | None = None,
                   name: str = "tertulia", wait: bool = True,
                   health_timeout: float = 300.0) -> Server:
    """`python -m engine serve` as a user runs it, cwd a temp dir, signed and sending."""
    port = port or free_port()
    env = tertulia_env(db_path, port, fake_url, extra_env)
    spawned = time.monotonic()
    proc = _spawn(name, [PY, "-m", "engine", "serve", "--port", str(port)], cwd=work,
                  env=env, log_path=work / f"{name}.log")
    server = Server(proc, port, spawned, env=env)
    if wait:
        server.healthy_after = _wait_healthy(proc, port, spawned, health_timeout)
    return server


def start_baseline(work: Path, mode: str, *, db_path: Path | None = None) -> Server:
    port = free_port()
    argv = [PY, "-m", "bench.baseline_app", "--mode", mode, "--port", str(port)]
    if db_path is not None:
        argv += ["--db", str(db_path)]
    spawned = time.monotonic()
    proc = _spawn(f"baseline-{mode}", argv, cwd=ROOT, env=_clean_env(),
                  log_path=work / f"baseline-{mode}.log")
    server = Server(proc, port, spawned)
    server.healthy_after = _wait_healthy(proc, port, spawned, 60.0)
    return server


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int | None, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return None, b""
    finally:
        conn.close()


def healthz(port: int) -> dict[str, Any] | None:
    status, body = http_get(port, "/healthz", timeout=5.0)
    if status is None:
        return None
    try:
        return dict(json.loads(body))
    except ValueError:
        return None


def pending_outbox(port: int) -> int | None:
    body = healthz(port)
    if not body or not isinstance(body.get("dispatcher"), dict):
        return None
    return int(body["dispatcher"]["pending"])


def wait_drained(port: int, timeout: float) -> tuple[bool, float]:
    """Wait (bounded) until the server's outbox has nothing pending; (drained, seconds)."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if pending_outbox(port) == 0:
            return True, time.monotonic() - started
        time.sleep(0.25)
    return False, time.monotonic() - started


def log_summary(path: Path) -> dict[str, int]:
    counts = {"lines": 0, "warning": 0, "error": 0, "traceback": 0, "database is locked": 0}
    try:
        with open(path, errors="replace") as fh:
            for line in fh:
                counts["lines"] += 1
                if " WARNING " in line:
                    counts["warning"] += 1
                if " ERROR " in line:
                    counts["error"] += 1
                if line.startswith("Traceback"):
                    counts["traceback"] += 1
                if "database is locked" in line:
                    counts["database is locked"] += 1
    except OSError:
        pass
    return counts


_LOG_LEVEL = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) (\S+): (.*)$")
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit)): (.*)$")


def log_excerpts(path: Path, limit: int = 6, width: int = 240) -> list[str]:
    """The distinct WARNING/ERROR messages of a server log (numbers folded), with counts."""
    seen: dict[str, list[Any]] = {}
    try:
        with open(path, errors="replace") as fh:
            for line in fh:
                line = line.rstrip("\n")
                match = _LOG_LEVEL.match(line)
                if match:
                    level, logger, message = match.groups()
                else:
                    exc = _EXCEPTION.match(line)
                    if not exc:
                        continue
                    level, logger, message = "raised", exc.group(1), exc.group(2)
                key = f"{level} {logger}: " + re.sub(r"\d+", "N", message)[:120]
                if key not in seen:
                    seen[key] = [0, f"{level} {logger}: {message}"[:width]]
                seen[key][0] += 1
    except OSError:
        return []
    ranked = sorted(seen.values(), key=lambda item: -item[0])
    return [f"{count}× `{text}`" for count, text in ranked[:limit]]


def log_report(report: Report, name: str, excerpts: list[str]) -> None:
    """Add a server log's distinct warnings and errors (log_excerpts) to a report."""
    if excerpts:
        report.text(f"{name} log, distinct warnings and errors:\n\n"
                    + "\n".join(f"- {e}" for e in excerpts))


# -- load --------------------------------------------------------------------------------


def load_spec(port: int, *, concurrency: int, duration: float, phones: tuple[int, int],
              texts: Sequence[str], order: str = "round_robin", n: int = 200_000,
              seed: int = 1, timeout: float = 30.0) -> dict[str, Any]:
    return {
        "host": HOST, "port": port, "path": "/twilio/whatsapp",
        "signed_url": f"http://{HOST}:{port}/twilio/whatsapp",
        "token": AUTH_TOKEN, "account_sid": ACCOUNT_SID,
        "concurrency": concurrency, "duration": duration, "timeout": timeout,
        "phones": {"base": PHONE_BASE, "start": phones[0], "count": phones[1]},
        "texts": list(texts), "order": order, "n": n, "seed": seed,
        "sid_prefix": os.urandom(4).hex(),
    }


def run_load(spec: dict[str, Any], *, limit: float | None = None) -> dict[str, Any]:
    """Run bench/loadgen.py in its own process and return its result."""
    limit = limit or float(spec["duration"]) + float(spec.get("timeout", 30)) + 60
    done = subprocess.run([PY, "-m", "bench.loadgen"], input=json.dumps(spec).encode(),
                          capture_output=True, cwd=str(ROOT), env=_clean_env(),
                          timeout=limit, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed: {done.stderr.decode()[-2000:]}")
    return dict(json.loads(done.stdout))


def summarize_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median over repeated runs of req/s and the latency percentiles."""
    return {
        "rps": median(r["rps"] for r in runs),
        "p50": median(r["lat_ms"]["p50"] for r in runs),
        "p95": median(r["lat_ms"]["p95"] for r in runs),
        "p99": median(r["lat_ms"]["p99"] for r in runs),
        "mean": median(r["lat_ms"]["mean"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "cpu_us": median(r["cpu_us"] for r in runs) if all("cpu_us" in r for r in runs)
        else None,
        "non200": sum(r["requests"] - r["ok"] for r in runs) + sum(r["errors"] for r in runs),
    }


# -- machine and results -----------------------------------------------------------------


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=str(ROOT), capture_output=True, text=True,
                              timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine_info() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    nproc = _git_free_nproc()
    # The path after the status code (_git strips the output, and with it the first
    # line's leading blank, so slicing at column 3 miscounted bench/ files).
    dirty = [line for line in _git("status", "--porcelain").splitlines()
             if line.split(maxsplit=1)[-1] and not line.split(maxsplit=1)[-1].startswith("bench/")]
    versions = []
    for dist in ("sqlalchemy", "apscheduler", "transitions", "starlette", "uvicorn", "uvloop",
                 "httptools", "h11", "twilio"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{dist} {metadata.version(dist)}")
    load1, load5, _ = os.getloadavg()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "commit": _git("rev-parse", "--short", "HEAD")
                  + (f" (+{len(dirty)} uncommitted file(s) outside bench/)" if dirty else ""),
        "cpu": f"{cpu}, {nproc} CPU(s) (nproc)",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "packages": ", ".join(versions),
        "load average at start": f"{load1:.2f} (1 min), {load5:.2f} (5 min)",
    }


def _git_free_nproc() -> str:
    try:
        return subprocess.run(["nproc"], capture_output=True, text=True, timeout=5,
                              check=False).stdout.strip() or str(os.cpu_count())
    except OSError:
        return str(os.cpu_count())


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != value:
            return "–"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


class Report:
    """One section of RESULTS.md: machine, settings, tables, notes; also printed."""

    def __init__(self, title: str, *, quick: bool) -> None:
        self.title = title + (" (quick mode)" if quick else "")
        self.info = machine_info()
        self.started = time.monotonic()
        self.parts: list[str] = []

    def settings(self, values: dict[str, Any]) -> None:
        self.parts.append("Settings: " + "; ".join(f"`{k}={v}`" for k, v in values.items()))

    def text(self, text: str) -> None:
        self.parts.append(text)

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]],
              caption: str | None = None) -> None:
        lines = []
        if caption:
            lines.append(f"**{caption}**\n")
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "|".join("---" for _ in headers) + "|")
        for row in rows:
            lines.append("| " + " | ".join(fmt(v) if not isinstance(v, str) else v
                                           for v in row) + " |")
        self.parts.append("\n".join(lines))

    def render(self) -> str:
        head = [f"## {self.title}", ""]
        head += [f"- {k}: {v}" for k, v in self.info.items()]
        head.append(f"- wall time of this benchmark: {time.monotonic() - self.started:.0f} s")
        load1, load5, _ = os.getloadavg()
        head.append(f"- load average at the end: {load1:.2f} (1 min), {load5:.2f} (5 min)")
        return "\n".join(head) + "\n\n" + "\n\n".join(self.parts) + "\n"

    def write(self, enabled: bool = True) -> None:
        text = self.render()
        print(text, flush=True)
        if not enabled:
            return
        if not RESULTS.exists():
            RESULTS.write_text(
                "# tertulia benchmark results\n\nEach section is appended by one bench/ "
                "script (see bench/README.md); newest last.\n\n")
        with open(RESULTS, "a", encoding="utf-8") as fh:
            fh.write("\n" + text)


# -- command line ------------------------------------------------------------------------


def bench_args(description: str, argv: Sequence[str] | None = None,
               extra: Any = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (db, logs)")
    parser.add_argument("--no-write", action="store_true",
                        help="print the results but do not append to bench/RESULTS.md")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    # On SIGTERM (run_all's time limit), unwind: `finally` blocks and atexit stop the
    # servers this benchmark started.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    return args


@contextlib.contextmanager
def workdir(name: str, keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"tertulia-bench-{name}-"))
    try:
        yield path
    finally:
        for proc in list(_started):
            with contextlib.suppress(Exception):
                proc.stop(timeout=15)
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)




# -- probes of the database a benchmark left behind ---------------------------------------

_ORPHAN_FRAGMENT = "LEFT JOIN sessions s ON j.id = :prefix || s.id AND s.closed_at IS NULL"
_ORPHAN_SAMPLE = (
    "SELECT j.id FROM (SELECT id FROM apscheduler_jobs WHERE id LIKE :pattern "
    "ORDER BY id LIMIT :k) j "
    "LEFT JOIN sessions s ON j.id = :prefix || s.id AND s.closed_at IS NULL "
    "WHERE j.id LIKE :pattern AND s.id IS NULL"
)
_ORPHAN_REWRITE = (
    "SELECT j.id FROM apscheduler_jobs j WHERE j.id LIKE :pattern AND NOT EXISTS ("
    "SELECT 1 FROM sessions s WHERE s.id = CAST(substr(j.id, :skip) AS INTEGER) "
    "AND s.closed_at IS NULL)"
)


def sweep_query_costs(db: Path, *, budget: float = 15.0, sample_jobs: int = 50) -> \
        dict[str, Any]:
    """Time the sweep's two queries, as the code runs them, on `db` (each bounded).

    A query still running after `budget` seconds is interrupted (sqlite3 progress
    handler) and reported as a lower bound; for orphan_jobs the full cost is then
    estimated from the same SQL over a sample of `sample_jobs` jobs (its cost is
    linear in the number of jobs). Also timed: a NOT EXISTS rewrite of orphan_jobs
    that looks sessions up by primary key (not in the code; shown as what a fix costs).
    """
    from sqlalchemy import event

    from engine.scheduling.timeouts import JOB_PREFIX
    from persistence import queries
    from persistence.db import make_engine
    from persistence.store import SqlStore

    engine = make_engine(f"sqlite:///{db}")
    deadline = [0.0]

    @event.listens_for(engine, "connect")
    def _bounded(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_progress_handler(
            lambda: 1 if time.monotonic() > deadline[0] else 0, 20_000)

    store = SqlStore(engine)
    out: dict[str, Any] = {}
    try:
        for name, fn in (("sessions_without_job", queries.sessions_without_job),
                         ("orphan_jobs", queries.orphan_jobs)):
            deadline[0] = time.monotonic() + budget
            t0 = time.perf_counter()
            try:
                rows = fn(store, JOB_PREFIX)
                out[name] = {"seconds": time.perf_counter() - t0, "rows": len(rows),
                             "complete": True}
            except Exception as exc:  # interrupted
                out[name] = {"seconds": time.perf_counter() - t0, "complete": False,
                             "error": type(exc).__name__}
    finally:
        engine.dispose()
    conn = db_connect(db)
    try:
        jobs = int(conn.execute("SELECT count(*) FROM apscheduler_jobs WHERE id LIKE ?",
                                (JOB_PREFIX + "%",)).fetchone()[0])
        open_sessions = int(conn.execute(
            "SELECT count(*) FROM sessions WHERE closed_at IS NULL").fetchone()[0])
        out["jobs"], out["open_sessions"] = jobs, open_sessions
        params = {"prefix": JOB_PREFIX, "pattern": JOB_PREFIX + "%", "k": sample_jobs,
                  "skip": len(JOB_PREFIX) + 1}
        # The SQL of the function as loaded (the file may have changed since).
        loaded_sql = " ".join(const for const in queries.orphan_jobs.__code__.co_consts
                              if isinstance(const, str))
        if _ORPHAN_FRAGMENT in loaded_sql and jobs:
            t0 = time.perf_counter()
            conn.execute(_ORPHAN_SAMPLE, params).fetchall()
            per_job = (time.perf_counter() - t0) / min(sample_jobs, jobs)
            out["orphan_jobs_estimate_s"] = per_job * jobs
            out["orphan_jobs_per_job_ms"] = per_job * 1000
        t0 = time.perf_counter()
        rows = conn.execute(_ORPHAN_REWRITE, params).fetchall()
        out["orphan_rewrite"] = {"seconds": time.perf_counter() - t0, "rows": len(rows)}
    finally:
        conn.close()
    return out


def stats_block_cost(db: Path, timeout_minutes: float) -> dict[str, Any]:
    """What the periodic stats block (STATS_INTERVAL_MINUTES) costs on `db`."""
    from datetime import timedelta

    from engine.monitoring.metrics import stats_block
    from persistence.db import make_engine
    from persistence.store import SqlStore

    engine = make_engine(f"sqlite:///{db}")
    try:
        t0 = time.perf_counter()
        text = stats_block(SqlStore(engine), datetime.now(UTC),
                           timedelta(minutes=timeout_minutes))
        return {"seconds": time.perf_counter() - t0, "lines": text.count("\n") + 1,
                "chars": len(text)}
    finally:
        engine.dispose()


def outbox_query_costs(db: Path) -> dict[str, Any]:
    """Time the outbox's per-round queries, as the code runs them, on a drained outbox.

    `claim` (run inside `store.run`, as the dispatcher does) writes only when it finds
    rows, so on a drained outbox it is read-only. The SQL is captured with sqlite3's trace
    callback and its EXPLAIN QUERY PLAN reported: a SCAN of `messages` means each round
    costs in proportion to every message ever stored.
    """
    from sqlalchemy import event

    from persistence import outbox
    from persistence.db import make_engine
    from persistence.store import SqlStore

    engine = make_engine(f"sqlite:///{db}")
    traced: list[str] = []

    @event.listens_for(engine, "connect")
    def _trace(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(traced.append)

    store = SqlStore(engine)
    out: dict[str, Any] = {}

    def claim() -> int:
        from datetime import timedelta

        now = datetime.now(UTC)
        return len(store.run(lambda tx: outbox.claim(
            tx, channel="whatsapp", now=now, worker="bench-probe",
            claim_until=now + timedelta(seconds=60), limit=32)))

    calls: dict[str, Callable[[], Any]] = {
        "pending_count": lambda: outbox.pending_count(store),
        "claim": claim,
    }
    try:
        for name, call in calls.items():
            with contextlib.suppress(Exception):
                call()  # warm the connection and the statement cache
            traced.clear()
            runs = []
            result: Any = None
            for _ in range(3):
                t0 = time.perf_counter()
                try:
                    result = call()
                except Exception as exc:  # a signature change, or rows pending
                    result = f"{type(exc).__name__}: {exc}"[:120]
                runs.append(time.perf_counter() - t0)
            selects = [sql for sql in traced if sql.lstrip().upper().startswith("SELECT")]
            out[name] = {"seconds": median(runs), "result": result,
                         "sql": selects[0] if selects else None}
    finally:
        engine.dispose()
    conn = db_connect(db)
    try:
        out["messages"] = int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
        for name in calls:
            sql = out[name]["sql"]
            if sql:
                plan = conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
                out[name]["plan"] = "; ".join(str(row[-1]) for row in plan)
    finally:
        conn.close()
    return out
