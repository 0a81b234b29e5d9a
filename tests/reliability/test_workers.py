"""Several identical workers on one database, attacked as an operator's bad day would:
a load of signed webhooks from many phones with short timeouts, while one worker is
killed -9 and (on PostgreSQL) another frozen with SIGSTOP past its lease.

What must hold, from what users received (the Twilio fake) and the rows ops read:
every webhook answered 200 was stored and answered; no 503; every session closed
exactly once; every message sent once, except at most the rows in flight in the killed
worker (counted and printed); order kept per phone; the timeout lag bounded (printed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from engine.core.flow import BASE_TEXTS
from tests.support.harness import Server, Servers, message_sid, wait_until, whatsapp
from tests.support.postgres import scratch_database
from tests.support.recipients import RecipientFakeTwilio

pytestmark = pytest.mark.e2e

PHONES = 36
MESSAGES = ("hola", "mmm", "mmm")
TIMEOUT_SECONDS = 4.0
NOTICE = BASE_TEXTS["timeout_notice"]
SETTINGS = {
    # The load is faster than a person per phone; the rate limit has its own tests.
    "RATE_LIMIT_MESSAGES": "100000",
    "SESSION_TIMEOUT_MINUTES": f"{TIMEOUT_SECONDS / 60:.6f}",
    "SCHEDULER_LEASE_SECONDS": "2",
    "OUTBOX_CLAIM_SECONDS": "6",
    "TWILIO_HTTP_TIMEOUT_SECONDS": "2",
    "SWEEP_INTERVAL_SECONDS": "2",
}


class Database:
    """The shared database, read as ops would (sqlite3 or psql), on either backend."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._db = create_engine(url)

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self._db.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql), params)]

    def close(self) -> None:
        self._db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'shared.db'}")
        yield db
        db.close()
        return
    with scratch_database() as url:
        db = Database(url)
        yield db
        db.close()


class Balancer:
    """A load balancer in front of the workers: a request that cannot reach one worker
    (refused, reset) goes to the next, the same MessageSid, as Twilio's retry would."""

    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers
        self.statuses: list[int] = []
        self.answered: list[str] = []  # MessageSids answered 200
        self._lock = threading.Lock()
        self._turn = 0

    def send(self, phone: str, body: str) -> None:
        sid = message_sid()
        for _ in range(len(self.servers) * 3):
            server = self._next()
            form = server.inbound_form(phone, body, sid)
            try:
                response = server.post_webhook(form)
            except httpx.TransportError:
                continue
            with self._lock:
                self.statuses.append(response.status_code)
                if response.status_code == 200:
                    self.answered.append(sid)
            return

    def _next(self) -> Server:
        with self._lock:
            self._turn += 1
            alive = [s for s in self.servers if s.running] or self.servers
            return alive[self._turn % len(alive)]


def _user(balancer: Balancer, index: int) -> Callable[[], None]:
    phone = f"+54911234{index:05d}"

    def talk() -> None:
        for body in MESSAGES:
            balancer.send(phone, body)
            time.sleep(0.25)

    return talk


def _start_workers(servers: Servers, database: Database, tmp_path: Path, count: int
                   ) -> list[Server]:
    env = {"DATABASE_URL": database.url, **SETTINGS}
    started = []
    for i in range(count):
        workdir = tmp_path / f"w{i}"
        workdir.mkdir()
        started.append(servers.start(allow_traceback=False, env=env, name=f"worker{i}",
                                     db_path=tmp_path / "shared.db"))
    return started


def _holder(workers: list[Server]) -> Server:
    return wait_until(lambda: next((w for w in workers if w.running
                                    and w.health()["scheduler"] == "active"), None),
                      10, "a worker holding the scheduler lease")


@contextlib.contextmanager
def _frozen(server: Server, seconds: float) -> Iterator[None]:
    assert server.proc is not None
    pid = server.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


def test_workers_under_load_survive_kill_9_and_sigstop(
    fake: RecipientFakeTwilio, database: Database, tmp_path: Path,
) -> None:
    postgres = database.url.startswith("postgresql")
    fake.latency = 0.05
    servers = Servers(tmp_path, fake.base_url)
    try:
        workers = _start_workers(servers, database, tmp_path, 3 if postgres else 2)
        balancer = Balancer(workers)
        users = [threading.Thread(target=_user(balancer, i)) for i in range(PHONES)]
        for user in users:
            user.start()
        time.sleep(0.6)

        victim = _holder(workers)
        assert victim.proc is not None
        victim_pid = victim.proc.pid
        victim.kill()
        in_flight = database.rows(
            "SELECT count(*) AS n FROM messages WHERE status = 'sending' "
            "AND twilio_sid IS NULL AND claimed_by LIKE :who", who=f"%:{victim_pid}:%")[0]["n"]
        if postgres:
            frozen = next(w for w in workers if w.running)
            with _frozen(frozen, seconds=4.0):  # twice the lease
                pass
        for user in users:
            user.join(60)
        survivors = [w for w in workers if w.running]
        wait_until(lambda: _settled(database), 60, "every session closed and sent")
        report = _check(database, fake, balancer, in_flight)
        print(f"\n{len(workers)} workers on {'PostgreSQL' if postgres else 'SQLite'}: "
              f"{report}")
        for worker in survivors:
            health = worker.health()
            assert health["ok"] is True, health
        assert sum(w.health()["scheduler"] == "active" for w in survivors) == 1
    finally:
        problems = servers.close()
    assert problems == [], problems


def _settled(database: Database) -> bool:
    open_sessions = database.rows("SELECT count(*) AS n FROM sessions "
                                  "WHERE closed_at IS NULL")[0]["n"]
    unsent = database.rows("SELECT count(*) AS n FROM messages WHERE direction = 'out' AND "
                           "status IN ('pending', 'sending') AND twilio_sid IS NULL")[0]["n"]
    return open_sessions == 0 and unsent == 0 and database.rows(
        "SELECT count(*) AS n FROM sessions")[0]["n"] >= PHONES


def _check(database: Database, fake: RecipientFakeTwilio, balancer: Balancer,
           in_flight: int) -> dict[str, Any]:
    assert 503 not in balancer.statuses
    assert set(balancer.statuses) == {200}, sorted(set(balancer.statuses))
    stored = {r["twilio_sid"] for r in database.rows(
        "SELECT twilio_sid FROM messages WHERE direction = 'in'")}
    assert set(balancer.answered) <= stored, "a webhook answered 200 was lost"

    closes = database.rows(
        "SELECT session_id, count(*) AS n FROM session_events WHERE to_state IN "
        "('closed', 'timeout', 'cancelled') GROUP BY session_id")
    assert all(r["n"] == 1 for r in closes), [r for r in closes if r["n"] != 1]
    sessions = database.rows("SELECT id, phone, expires_at, closed_at, close_reason "
                             "FROM sessions ORDER BY id")
    assert {r["id"] for r in sessions} == {r["session_id"] for r in closes}

    duplicates = 0
    for phone in {r["phone"] for r in sessions}:
        expected = [r["body"] for r in database.rows(
            "SELECT m.body FROM messages m JOIN sessions s ON s.id = m.session_id "
            "WHERE s.phone = :phone AND m.direction = 'out' ORDER BY m.id", phone=phone)]
        got = fake.delivered_to(whatsapp(phone))
        timed_out = sum(1 for r in sessions if r["phone"] == phone
                        and r["close_reason"] == "timeout")
        assert expected.count(NOTICE) == timed_out, (phone, expected)
        duplicates += len(got) - len(expected)
        assert _in_order(got, expected), (phone, got, expected)
    assert 0 <= duplicates <= in_flight, (duplicates, in_flight)

    lags = sorted(
        (_at(m["created_at"]) - _at(s["expires_at"])).total_seconds()
        for s in sessions if s["close_reason"] == "timeout"
        for m in database.rows("SELECT created_at FROM messages WHERE session_id = :id "
                               "AND body = :notice", id=s["id"], notice=NOTICE))
    assert len(lags) == sum(1 for s in sessions if s["close_reason"] == "timeout")
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else 0.0
    return {"webhooks": len(balancer.statuses), "answered 200": len(balancer.answered),
            "sessions": len(sessions), "in flight in the killed worker": in_flight,
            "sent twice": duplicates, "timeout lag p99 s": round(p99, 3),
            "timeout lag max s": round(lags[-1], 3) if lags else 0.0}


def _at(value: datetime | str) -> datetime:
    """A time as sqlite3 (text) or psql (a datetime) gives it."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _in_order(got: list[str], expected: list[str]) -> bool:
    """`got` is `expected`, with some of its messages repeated right after themselves."""
    i = 0
    for body in got:
        if i < len(expected) and body == expected[i]:
            i += 1
        elif i == 0 or body != expected[i - 1]:
            return False
    return i == len(expected)
