"""Durable inactivity timeouts, end to end: a real `tertulia serve`, its SQLite file, the
real APScheduler and the loopback Twilio fake, with short real timeouts.

Each test checks what the user receives (the fake's records) and what ops read
(sqlite3 on the database file), and that the server logged no traceback. Waits poll
with a bound; no assertion depends on how fast something happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

import httpx
import pytest

from engine.scheduling.timeouts import POSTGRES_JOB_GRACE
from tests.support.harness import (
    AUTH_TOKEN,
    FORM,
    Server,
    ServerFactory,
    wait_until,
    whatsapp,
)
from tests.support.recipients import RecipientFakeTwilio
from tests.support.twilio_fake import FakeTwilio

pytestmark = pytest.mark.e2e


NOTICE = "Cerramos tu sesión por inactividad. Escribinos cuando quieras para empezar de nuevo."
WARNING = "¿Seguís ahí?"
GREETING = "¡Hola! 👋 Soy el asistente de Tertulia."
REPROMPT = "¿Querés la prueba gratis?"  # `greeting`'s answer to a message it did not get
# No intent in `greeting`: a re-prompt, and the session stays open where it is.
IDLE = "mmm"
STATS_HEADER = "📊 === ESTADÍSTICAS DEL SISTEMA ==="


# -- helpers --------------------------------------------------------------------------


# Each server test runs on the embedded SQLite and on PostgreSQL.
E2E_BACKENDS = ("sqlite", "postgres")


def ts(value: str | None) -> datetime:
    """A time column as sqlite3 returns it (naive UTC text) as an aware datetime."""
    assert value is not None
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def sessions_of(server: Server, phone: str) -> list[dict[str, Any]]:
    return server.rows("SELECT * FROM sessions WHERE phone = ? ORDER BY id", (phone,))


def jobs(server: Server) -> dict[str, float]:
    return {r["id"]: r["next_run_time"] for r in
            server.rows("SELECT id, next_run_time FROM apscheduler_jobs")}


def job_grace(server: Server) -> float:
    """Seconds after the expiry that the server arms a timeout's job: on PostgreSQL the
    overdue scan is the fast path and the job its backstop."""
    return POSTGRES_JOB_GRACE.total_seconds() if server.database_url.startswith(
        "postgresql") else 0.0


def bodies_out(server: Server, session_id: int) -> list[str]:
    return [r["body"] for r in server.rows(
        "SELECT body FROM messages WHERE session_id = ? AND direction = 'out' ORDER BY id",
        (session_id,))]


def received(fake: FakeTwilio, phone: str) -> list[str]:
    return fake.delivered_to(whatsapp(phone))


def wait_received(fake: FakeTwilio, phone: str, count: int, timeout: float = 10.0) -> list[str]:
    return wait_until(lambda: (got := received(fake, phone)) and len(got) >= count and got,
                      timeout, f"{count} message(s) delivered to {phone}")


def send_ok(server: Server, phone: str, text: str, **kw: Any) -> None:
    response = server.send(phone, text, **kw)
    assert response.status_code == 200, response.text


def outbox_settled(server: Server) -> bool:
    return not server.rows("SELECT id FROM messages WHERE direction = 'out' AND channel = "
                           "'whatsapp' AND status IN ('pending', 'sending')")


def assert_timeout_invariants(server: Server, timeout: timedelta) -> None:
    """No timeout close was early or stale, as the messages table witnesses it:
    every `timeout` close came at least `timeout` after the session's last inbound
    message (a stale close of a renewed session would break this), and it was
    recorded once."""
    for s in server.rows("SELECT * FROM sessions WHERE close_reason = 'timeout'"):
        assert s["state"] == "timeout", s
        last_in = server.rows("SELECT max(created_at) AS t FROM messages WHERE session_id = ? "
                              "AND direction = 'in'", (s["id"],))[0]["t"]
        assert ts(s["closed_at"]) >= ts(s["expires_at"]), s
        assert ts(s["closed_at"]) >= ts(last_in) + timeout, (s, last_in)
        expires = server.rows("SELECT count(*) AS n FROM session_events WHERE session_id = ? "
                              "AND trigger = 'expire'", (s["id"],))[0]["n"]
        assert expires == 1, s
        assert bodies_out(server, s["id"]).count(NOTICE) <= 1, s


def assert_clean_log(*servers: Server) -> None:
    for server in servers:
        log = server.log_text()
        assert "Traceback" not in log, log[-6000:]
        assert AUTH_TOKEN not in log, "the log shows TWILIO_AUTH_TOKEN"


def wait_past(moment: datetime, timeout: float = 15.0) -> None:
    """Wait (bounded) until the wall clock is past `moment`."""
    wait_until(lambda: datetime.now(UTC) > moment, timeout, f"the clock to pass {moment}",
               interval=0.02)


def phone(n: int) -> str:
    return f"+54911234{n:05d}"


# -- the notice -----------------------------------------------------------------------


def test_notice_arrives_once_and_a_later_message_opens_a_new_session(
    fake: FakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"SESSION_TIMEOUT_MINUTES": "0.05"})
    user = phone(1)
    send_ok(server, user, "hola")
    first = sessions_of(server, user)[0]
    assert first["state"] == "greeting" and first["closed_at"] is None
    assert ts(first["expires_at"]) - ts(first["last_inbound_at"]) == timedelta(seconds=3)
    assert f"timeout:{first['id']}" in jobs(server)

    got = wait_received(fake, user, 2)
    assert got[0].startswith(GREETING) and got[1] == NOTICE
    row = wait_until(lambda: (s := sessions_of(server, user)[0])["closed_at"] and s, 5,
                     "the row to close")
    assert (row["state"], row["close_reason"]) == ("timeout", "timeout")
    wait_until(lambda: f"timeout:{first['id']}" not in jobs(server), 5,
               "the job row to be removed")
    assert "session 1 closed phone=+5491123... state=timeout reason=timeout" in \
        server.log_text()

    send_ok(server, user, IDLE)  # a new conversation: greeted again, not re-prompted
    got = wait_received(fake, user, 3)
    assert got[2].startswith(GREETING)
    assert got.count(NOTICE) == 1
    rows = sessions_of(server, user)
    assert len(rows) == 2 and rows[1]["state"] == "greeting" and rows[1]["closed_at"] is None
    assert rows[0]["state"] == "timeout"
    assert_timeout_invariants(server, timedelta(seconds=3))
    assert_clean_log(server)


# -- renewal --------------------------------------------------------------------------


def test_messages_a_second_apart_keep_the_session_open_and_it_fires_once_they_stop(
    fake: FakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"SESSION_TIMEOUT_MINUTES": "0.0667"})  # about 4 s
    timeout = timedelta(minutes=0.0667)
    user = phone(2)
    send_ok(server, user, "hola")
    sid = sessions_of(server, user)[0]["id"]
    start = time.monotonic()
    for i in range(1, 7):  # ~6 s of messages, 1 s apart: past the first 4 s expiry
        time.sleep(max(0.0, start + i - time.monotonic()))
        send_ok(server, user, IDLE)
        rows = sessions_of(server, user)
        assert len(rows) == 1 and rows[0]["id"] == sid and rows[0]["closed_at"] is None, rows
        assert NOTICE not in received(fake, user)
    last = sessions_of(server, user)[0]
    assert ts(last["expires_at"]) > ts(last["started_at"]) + timedelta(seconds=6)

    got = wait_until(lambda: NOTICE in (r := received(fake, user)) and r, 15,
                     "the notice after the messages stop")
    assert got.count(NOTICE) == 1 and got[-1] == NOTICE
    assert got[0].startswith(GREETING) and len(got) == 8  # greeting, 6 answers, notice
    row = sessions_of(server, user)
    assert len(row) == 1 and (row[0]["state"], row[0]["close_reason"]) == ("timeout", "timeout")
    assert row[0]["last_inbound_at"] == last["last_inbound_at"]
    assert_timeout_invariants(server, timeout)
    assert_clean_log(server)


# -- the race -------------------------------------------------------------------------


def _post_at(server: Server, form: dict[str, str], at: float) -> httpx.Response:
    """POST a signed webhook at wall time `at`, on a connection opened beforehand."""
    headers = {"Content-Type": FORM, "X-Twilio-Signature": server.signature(form)}
    with httpx.Client(base_url=server.url, timeout=10.0, trust_env=False) as client:
        client.get("/healthz")  # warm the connection, so `at` is when the request leaves
        time.sleep(max(0.0, at - time.time()))
        return client.post("/twilio/whatsapp", content=urlencode(form), headers=headers)


def test_a_message_at_the_instant_of_expiry_renews_or_follows_the_timeout_never_both(
    fake: FakeTwilio, server_factory: ServerFactory,
) -> None:
    timeout = timedelta(seconds=3)
    server = server_factory(env={"SESSION_TIMEOUT_MINUTES": "0.05"})
    offsets = [-0.03, -0.012, -0.006, -0.003, 0.0, 0.0, 0.003, 0.006, 0.012]
    users = [phone(100 + i) for i in range(len(offsets))]
    for user in users:
        send_ok(server, user, "hola")
    responses: dict[str, httpx.Response] = {}

    def race(user: str, offset: float) -> None:
        expires = ts(sessions_of(server, user)[0]["expires_at"]).timestamp()
        responses[user] = _post_at(server, server.inbound_form(user, IDLE), expires + offset)

    threads = [threading.Thread(target=race, args=(u, o)) for u, o in zip(users, offsets,
                                                                         strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert all(responses[u].status_code == 200 for u in users), responses

    outcomes: dict[str, str] = {}
    for user in users:
        rows = sessions_of(server, user)
        first = rows[0]
        inbound = server.rows("SELECT session_id FROM messages WHERE direction = 'in' AND "
                              "body = ? AND session_id IN (SELECT id FROM sessions WHERE "
                              "phone = ?)", (IDLE, user))
        assert len(inbound) == 1, inbound
        if len(rows) == 1:
            # Renewed: the message landed first. The job's wake-up at the old expiry
            # must find the later expires_at and re-arm there, closing nothing.
            assert first["closed_at"] is None and inbound[0]["session_id"] == first["id"]
            renewed = ts(first["expires_at"]).timestamp() + job_grace(server)
            wait_until(lambda f=first, r=renewed: abs(
                jobs(server).get(f"timeout:{f['id']}", 0) - r) < 1e-3, 10,
                f"the job of {user} to re-arm at the renewed expiry")
            now = sessions_of(server, user)
            assert len(now) == 1 and now[0]["id"] == first["id"], now
            assert now[0]["closed_at"] is None or ts(now[0]["closed_at"]) >= ts(
                now[0]["expires_at"]), now
            got = wait_received(fake, user, 2)
            assert got[0].startswith(GREETING) and got[1].startswith(REPROMPT), got
            sent = server.rows("SELECT created_at FROM messages WHERE session_id = ? AND "
                               "direction = 'out' AND body = ?", (first["id"], NOTICE))
            assert all(ts(m["created_at"]) >= ts(first["expires_at"]) for m in sent), sent
            outcomes[user] = "renewed"
        else:
            # Timed out first: the notice, then the message opens a new session.
            assert len(rows) == 2, rows
            assert (first["state"], first["close_reason"]) == ("timeout", "timeout")
            second = rows[1]
            assert second["state"] == "greeting" and inbound[0]["session_id"] == second["id"]
            got = wait_received(fake, user, 3)
            assert got[0].startswith(GREETING) and got[1] == NOTICE, got
            assert got[2].startswith(GREETING), got
            assert bodies_out(server, first["id"]).count(NOTICE) == 1
            by = server.rows("SELECT detail FROM session_events WHERE session_id = ? AND "
                             "trigger = 'expire'", (first["id"],))
            outcomes[user] = "timed out, then new (by the message)" if by[0]["detail"] \
                else "timed out, then new (by the job)"
    print("race outcomes:", {o: list(outcomes.values()).count(o) for o in set(outcomes.values())})
    assert_timeout_invariants(server, timeout)
    assert_clean_log(server)


# -- kill -9 --------------------------------------------------------------------------


def test_a_timeout_due_during_a_kill_9_fires_once_soon_after_restart(
    fake: FakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"SESSION_TIMEOUT_MINUTES": "0.05"})
    user = phone(3)
    send_ok(server, user, "hola")
    wait_received(fake, user, 1)
    wait_until(lambda: outbox_settled(server), 5, "the greeting to be recorded as sent")
    row = sessions_of(server, user)[0]

    assert server.kill() == -signal.SIGKILL
    wait_past(ts(row["expires_at"]) + timedelta(seconds=0.5))
    assert f"timeout:{row['id']}" in jobs(server), "the job survives a kill -9"
    assert sessions_of(server, user)[0]["closed_at"] is None
    assert NOTICE not in received(fake, user)

    server.restart()
    wait_until(lambda: NOTICE in received(fake, user), 10, "the notice after the restart")
    wait_until(lambda: outbox_settled(server) and not jobs(server), 5, "the outbox to settle")
    assert received(fake, user).count(NOTICE) == 1
    after = sessions_of(server, user)
    assert len(after) == 1 and (after[0]["state"], after[0]["close_reason"]) == (
        "timeout", "timeout")
    assert_timeout_invariants(server, timedelta(seconds=3))
    assert_clean_log(server)


# -- the sweep ------------------------------------------------------------------------


def _add_orphan_job(server: Server, session_id: int) -> None:
    """Write a timeout job for `session_id` with APScheduler itself, as a crash leaves it."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    store = SQLAlchemyJobStore(url=server.database_url)
    scheduler = BackgroundScheduler(jobstores={"default": store}, timezone="UTC")
    scheduler.start(paused=True)
    try:
        scheduler.add_job("engine.scheduling.timeouts:fire", "date", args=[session_id],
                          id=f"timeout:{session_id}", replace_existing=True,
                          run_date=datetime.now(UTC) + timedelta(hours=1))
    finally:
        scheduler.shutdown(wait=True)
        store.engine.dispose()


def test_sweep_at_start_repairs_missing_jobs_and_removes_orphans(
    fake: FakeTwilio, server_factory: ServerFactory, tmp_path: Path,
) -> None:
    server = server_factory(env={"SESSION_TIMEOUT_MINUTES": "1"})
    due, later, closed = phone(10), phone(11), phone(12)
    for user in (due, later, closed):
        send_ok(server, user, "hola")
    ids = {u: sessions_of(server, u)[0]["id"] for u in (due, later, closed)}
    result = subprocess.run([sys.executable, "-m", "engine", "sessions", "close",
                             str(ids[closed]), "--quiet"], cwd=tmp_path, env=server.env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert sessions_of(server, closed)[0]["close_reason"] == "admin"
    wait_until(lambda: all(len(received(fake, u)) == 1 for u in (due, later, closed)), 10,
               "the greetings")

    assert server.kill() == -signal.SIGKILL
    # Drift, as crashes leave it: two open sessions without their jobs (one of them
    # already past its expiry), a job for a closed session and one for no session.
    past = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    _exec(server, "UPDATE sessions SET expires_at = ? WHERE id = ?", (past, ids[due]))
    _exec(server, "DELETE FROM apscheduler_jobs WHERE id IN (?, ?)",
          (f"timeout:{ids[due]}", f"timeout:{ids[later]}"))
    _add_orphan_job(server, ids[closed])
    _add_orphan_job(server, 9999)
    assert set(jobs(server)) == {f"timeout:{ids[closed]}", "timeout:9999"}

    server.restart()
    # The killed process's scheduler lease runs out first (SCHEDULER_LEASE_SECONDS); the
    # restarted worker then takes it and sweeps. The overdue scan, which every worker
    # runs from the start, may close the due session before that.
    sweeps = wait_until(lambda: [line for line in server.log_text().splitlines()
                                 if "sweep:" in line], 15, "the sweep at takeover")
    assert len(sweeps) == 1, sweeps
    assert re.search(r"sweep: expired [01] session\(s\) with no job, re-armed 1, "
                     r"removed 2 orphan job\(s\)$", sweeps[0]), sweeps
    assert set(jobs(server)) == {f"timeout:{ids[later]}"}
    later_row = sessions_of(server, later)[0]
    assert later_row["closed_at"] is None
    assert jobs(server)[f"timeout:{ids[later]}"] == pytest.approx(
        ts(later_row["expires_at"]).timestamp() + job_grace(server), abs=1e-3)
    assert (sessions_of(server, due)[0]["state"], sessions_of(server, due)[0]["close_reason"]) \
        == ("timeout", "timeout")
    wait_until(lambda: NOTICE in received(fake, due), 10, "the notice of the swept session")
    assert received(fake, due).count(NOTICE) == 1
    assert len(received(fake, closed)) == 1  # the greeting only: closed quietly, no notice
    assert_clean_log(server)


def _exec(server: Server, sql: str, params: Any = ()) -> None:
    """A write as ops (or a crash) would make it, on either backend's own client."""
    from sqlalchemy import create_engine

    if server.database_url.startswith("sqlite"):
        with closing(sqlite3.connect(server.db_path, timeout=10)) as conn, conn:
            conn.execute(sql, params)
        return
    db = create_engine(server.database_url)
    try:
        with db.begin() as conn:
            conn.exec_driver_sql(sql.replace("?", "%s"), tuple(params))
    finally:
        db.dispose()


# -- graceful shutdown ----------------------------------------------------------------


def test_graceful_shutdown_leaves_pending_jobs_in_the_store(
    fake: FakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"SESSION_TIMEOUT_MINUTES": "1"})
    users = [phone(20), phone(21)]
    for user in users:
        send_ok(server, user, "hola")
    ids = [sessions_of(server, u)[0]["id"] for u in users]
    before = jobs(server)
    assert set(before) == {f"timeout:{i}" for i in ids}

    assert server.stop() == 0  # SIGTERM: a graceful stop, exit status 0
    log = server.log_text()
    assert "Application shutdown complete." in log and "Finished server process" in log
    assert jobs(server) == before, "pending jobs stay in the store, untouched"
    assert all(sessions_of(server, u)[0]["closed_at"] is None for u in users)
    assert not any(NOTICE in received(fake, u) for u in users)

    server.restart()  # and they are picked up again: nothing to repair
    assert jobs(server) == before
    assert "sweep:" not in server.log_text()
    assert_clean_log(server)


# -- the warning ----------------------------------------------------------------------


def test_warning_comes_once_before_the_notice_and_a_reply_renews(
    fake: FakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"SESSION_TIMEOUT_MINUTES": "0.0667",
                                 "SESSION_WARNING_SECONDS": "2"})
    quiet, replies = phone(30), phone(31)
    send_ok(server, quiet, "hola")
    send_ok(server, replies, "hola")

    wait_until(lambda: any(b.startswith(WARNING) for b in received(fake, replies)), 10,
               "the warning")
    assert sessions_of(server, replies)[0]["closed_at"] is None
    send_ok(server, replies, IDLE)  # a reply after the warning renews the session
    renewed = sessions_of(server, replies)[0]
    assert renewed["closed_at"] is None
    assert ts(renewed["expires_at"]) > ts(renewed["started_at"]) + timedelta(seconds=4)

    got = wait_until(lambda: NOTICE in (r := received(fake, quiet)) and r, 10,
                     "the notice of the quiet user")
    assert got[0].startswith(GREETING) and got[1].startswith(WARNING) and got[2] == NOTICE
    assert len(got) == 3
    quiet_row = sessions_of(server, quiet)[0]
    assert (quiet_row["state"], quiet_row["close_reason"]) == ("timeout", "timeout")

    # The one who replied is past their first expiry by now, and still open.
    wait_past(ts(renewed["started_at"]) + timedelta(minutes=0.0667, seconds=0.2))
    rows = sessions_of(server, replies)
    assert len(rows) == 1 and rows[0]["closed_at"] is None, rows
    got = received(fake, replies)
    assert got[0].startswith(GREETING) and got[1].startswith(WARNING)
    assert got[2].startswith(REPROMPT) and NOTICE not in got
    # A fresh warning for the new idle stretch may already have come, after the reply.
    assert len(got) == 3 or (len(got) == 4 and got[3] == got[1]), got
    assert "warned phone=+5491123... state=greeting" in server.log_text()
    assert_timeout_invariants(server, timedelta(minutes=0.0667))
    assert_clean_log(server)


# -- outside the 24-hour window -------------------------------------------------------


def test_a_session_idle_past_the_24_hour_window_closes_without_a_notice(
    fake: FakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"SESSION_TIMEOUT_MINUTES": "0.05"})
    user = phone(40)
    send_ok(server, user, "hola")
    wait_received(fake, user, 1)
    server.stop()
    row = sessions_of(server, user)[0]
    assert row["closed_at"] is None, "stopped before the timeout fired"
    job_due = jobs(server)[f"timeout:{row['id']}"]

    fmt = "%Y-%m-%d %H:%M:%S.%f"
    now = datetime.now(UTC)
    _exec(server, "UPDATE sessions SET last_inbound_at = ?, expires_at = ? "
                 "WHERE id = ?", ((now - timedelta(hours=25)).strftime(fmt),
                                  now.strftime(fmt), row["id"]))
    wait_past(datetime.fromtimestamp(job_due, UTC))  # the job is due when it starts again

    server.restart()
    closed = wait_until(lambda: (s := sessions_of(server, user)[0])["closed_at"] and s, 10,
                        "the session to close")
    assert (closed["state"], closed["close_reason"]) == ("timeout", "timeout")
    events = server.rows("SELECT trigger, detail FROM session_events WHERE session_id = ? "
                         "AND trigger = 'expire'", (row["id"],))
    assert len(events) == 1 and "24-hour window" in events[0]["detail"], events
    assert NOTICE not in bodies_out(server, row["id"]), "no notice is even queued"
    wait_until(lambda: outbox_settled(server) and not jobs(server), 5, "the outbox to settle")
    assert len(received(fake, user)) == 1  # the greeting only
    assert_clean_log(server)


# -- stats and masking ----------------------------------------------------------------


def _full_numbers(log: str, phones: list[str]) -> list[str]:
    return [p for raw in phones for p in (raw, raw.lstrip("+")) if p in log]


def test_stats_block_and_no_full_phone_number_anywhere_in_the_log(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"SESSION_TIMEOUT_MINUTES": "1",
                                 "STATS_INTERVAL_MINUTES": "0.02",
                                 "SWEEP_INTERVAL_SECONDS": "1"})
    users = [phone(50), phone(51), phone(52)]
    # The third one's first send fails permanently: Twilio's error text carries the
    # full number, and it goes through the outbox's log line.
    fake.script_error_for(users[2], 400, 21211)
    for user in users:
        send_ok(server, user, "hola", profile_name="Ana")
    wait_until(lambda: STATS_HEADER in server.log_text()
               and "👥 Sesiones activas: 3 (timeout: 1 min)" in server.log_text(), 10,
               "a stats block with the three sessions")
    send_ok(server, users[0], "chau")  # a close: one more lifecycle line with the phone
    wait_until(lambda: "(permanent error)" in server.log_text() and outbox_settled(server), 10,
               "the failed send to be logged")
    server.stop()

    log = server.log_text()
    lines = log.splitlines()
    at = lines.index("👥 Sesiones activas: 3 (timeout: 1 min)")
    block = lines[at - 1:]
    assert block[0].endswith(f"INFO tertulia: {STATS_HEADER}")
    assert block[2] == "👥 Sesiones activas:"
    assert all(re.fullmatch(r"   - \+5491123\.\.\.: activa por \d+min, timeout en \d+min", line)
               for line in block[3:6]), block[:6]
    assert "session 1 created phone=+5491123... state=greeting" in log
    assert "session 1 closed phone=+5491123... state=closed reason=goodbye" in log
    assert "+5491123..." in log
    assert _full_numbers(log, users) == [], "a full phone number reached the log"
    assert_clean_log(server)


def test_json_log_lines_all_parse_and_lifecycle_lines_carry_fields(
    fake: FakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"LOG_FORMAT": "json", "STATS_INTERVAL_MINUTES": "0.02"})
    user = phone(60)
    send_ok(server, user, "hola")
    send_ok(server, user, IDLE)
    wait_until(lambda: STATS_HEADER in server.log_text(), 10, "a stats block")
    send_ok(server, user, "chau")
    wait_received(fake, user, 3)
    server.stop()

    records = []
    for line in server.log_text().splitlines():
        if not line.strip() or line.startswith("--- harness:"):
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line!r}")
    loggers = {r["logger"] for r in records}
    assert {"uvicorn.error", "tertulia", "tertulia.sessions"} <= loggers, loggers
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    lifecycle = [r for r in records if r["logger"] == "tertulia.sessions"]
    assert [r["event"] for r in lifecycle] == ["created", "renewed", "closed"], lifecycle
    for r in lifecycle:
        assert r["session"] == 1 and r["phone"] == "+5491123..." and r["state"], r
    assert lifecycle[-1]["reason"] == "goodbye" and lifecycle[-1]["state"] == "closed"
    assert any(r["message"].startswith(STATS_HEADER) for r in records)
    assert _full_numbers(server.log_text(), [user]) == []
    assert_clean_log(server)


# -- two processes, one database ------------------------------------------------------


class Chat:
    """`tertulia chat` as a subprocess, fed through a stdin pipe; stdout is collected."""

    def __init__(self, workdir: Path, env: dict[str, str], phone: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "chat", "--phone", phone], cwd=workdir,
            env={**env, "PYTHONIOENCODING": "utf-8"}, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._collect, args=(s, sink), daemon=True)
                         for s, sink in ((self.proc.stdout, self.lines),
                                         (self.proc.stderr, self.errors))]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _collect(stream: IO[str] | None, sink: list[str]) -> None:
        assert stream is not None
        for line in stream:
            sink.append(line.rstrip("\n"))

    def say(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def output(self) -> str:
        return "\n".join(self.lines)

    def close(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        for thread in self._threads:
            thread.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


@pytest.fixture
def chats() -> Iterator[list[Chat]]:
    made: list[Chat] = []
    yield made
    for chat in made:
        chat.close()


def test_serve_and_chat_share_one_database_with_one_scheduler_lease_holder(
    fake: FakeTwilio, server_factory: ServerFactory, tmp_path: Path, chats: list[Chat],
) -> None:
    server = server_factory(env={"SESSION_TIMEOUT_MINUTES": "0.05"})
    assert server.health()["scheduler"] == "active"
    console_phone = phone(70)
    chat = Chat(tmp_path, server.env, console_phone)
    chats.append(chat)
    wait_until(lambda: "tertulia chat" in chat.output(), 15, "the chat banner")

    [lease] = server.rows("SELECT holder, token FROM leases WHERE name = 'scheduler'")
    holder = lease["holder"]
    token = lease["token"]
    assert server.proc is not None
    assert f":{server.proc.pid}:" in holder, "serve holds the scheduler lease"
    assert token >= 1
    assert server.health()["scheduler"] == "active"
    assert server.health()["lease"]["held"] is True

    chat.say("hola")
    wait_until(lambda: GREETING in chat.output(), 10, "the greeting in the terminal")
    row = wait_until(lambda: sessions_of(server, console_phone), 5, "the console session")[0]
    assert row["channel"] == "console" and row["closed_at"] is None
    wait_until(lambda: f"timeout:{row['id']}" in jobs(server), 5, "the job chat wrote")

    # Chat is idle; serve (the lock holder) fires the job; chat prints its notice.
    wait_until(lambda: f"🤖 {NOTICE}" in chat.output(), 10, "the notice printed by chat")
    wait_until(lambda: "greeting → timeout (timeout)" in chat.output(), 5, "the state line")
    closed = sessions_of(server, console_phone)[0]
    assert (closed["state"], closed["close_reason"]) == ("timeout", "timeout")
    [(closes,)] = [tuple(r.values()) for r in server.rows(
        "SELECT count(*) FROM session_events WHERE session_id = ? AND to_state = 'timeout'",
        (row["id"],))]
    assert closes == 1, "closed once, whichever worker's timer got there first"
    assert chat.output().count(NOTICE) == 1
    assert fake.requests == [], "console notices never go to Twilio"

    chat.say("/quit")
    assert chat.close() == 0
    assert "Traceback" not in "\n".join(chat.errors), chat.errors
    assert server.health()["scheduler"] == "active"
    assert_clean_log(server)
