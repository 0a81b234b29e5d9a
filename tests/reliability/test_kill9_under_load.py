"""kill -9 under load: conversations in flight survive three crashes of `tertulia serve`.

Thirty phones walk the trial flow (and decline, cancel, say goodbye, abandon it) from
their own threads while the server is killed with SIGKILL at three seeded random
moments and restarted on the same database each time. A webhook cut off by a kill is
retried with the same MessageSid, as Twilio retries on connection failure. Then,
after a final wait (sessions time out after 3 s), the test checks what ops would read
and what users received:

- every webhook that got a 200 is in `messages` (direction in), once;
- every session is consistent (support.assert_sessions_consistent) and closed;
- every timed-out session has exactly one 'expire' event and one timeout notice, and
  no other session has any;
- no outbound row is lost: each ends sent (queued at the fake), with its Twilio SID,
  and the fake really got that SID, with that body, for that phone, in row order;
- duplicate sends are counted and printed. A duplicate is a 201 at the fake whose SID
  no row holds: the process died after Twilio accepted the request and before
  `record_sent` committed, so the row was still `sending` and the next start resent
  it. Hence duplicates <= rows released at start-up (the server logs that count), and
  <= kills x WORKERS: only the dispatcher's worker threads (engine/outbox/dispatcher.py,
  `WORKERS`) can have a request in flight when the process dies.
"""

from __future__ import annotations

import collections
import random
import re
import threading
import time

import httpx

from engine.outbox.dispatcher import WORKERS
from persistence.sealing import new_key
from tests.support.harness import message_sid, run_threads, wait_until, whatsapp
from tests.support.trial import SENT, UNSENT, assert_sessions_consistent, normalize, text_of

SEED = 20261201
PHONES = 30
KILLS = 3
DISPATCH_WORKERS = WORKERS  # the dispatcher's default, which the server uses
ROUNDS = 40  # conversations per phone at most; the kills, not this, end the load
RETRY_SECONDS = 30.0  # how long a cut-off webhook is retried (a restart takes ~1-2 s)

# What users do. {name} and {email} are filled per phone.
SCRIPTS = (
    ("hola", "sí", "{name}", "{email}"),  # credentials (refused if the phone had a trial)
    ("hola", "quiero la prueba", "{name}", "esto-no-es-un-mail", "{email}"),
    ("hola", "no"),  # declined: goodbye
    ("buenas", "sí", "cancelar"),  # cancelled
    ("hola", "sí", "{name}"),  # abandoned: timeout
    ("hola", "qué es esto", "gracias, chau"),  # goodbye
    ("hola",),  # abandoned: timeout
)
_RELEASED = re.compile(r"outbox: (\d+) message\(s\) were in flight in worker \S+, which is gone")


def test_kill9_under_load(fake, server_factory):
    # Each phone sends faster than a person (past the default 30 a minute): raised, as
    # the load is about crashes, not the rate limit. A CREDENTIALS_KEY, as in production:
    # credentials sealed by a killed process are opened by the next one (without one they
    # would be given up, by design).
    server = server_factory(env={"SESSION_TIMEOUT_MINUTES": "0.05",
                                 "SWEEP_INTERVAL_SECONDS": "1",
                                 "RATE_LIMIT_MESSAGES": "100000",
                                 "CREDENTIALS_KEY": new_key()})
    rng = random.Random(SEED)
    stop = threading.Event()
    lock = threading.Lock()
    answers: dict[str, int | None] = {}  # MessageSid -> final HTTP status (None: none)
    retried = collections.Counter[str]()

    def post(phone: str, text: str) -> None:
        sid = message_sid()
        deadline = time.monotonic() + RETRY_SECONDS
        status: int | None = None
        while time.monotonic() < deadline:
            try:
                status = server.send(phone, text, sid).status_code
                break
            except httpx.TransportError:  # server down or killed mid-request
                with lock:
                    retried[sid] += 1
                time.sleep(0.1)
        with lock:
            answers[sid] = status

    def driver(i: int) -> None:
        phone = f"+5491155{i:06d}"
        prng = random.Random(f"{SEED}:{phone}")
        name, email = f"Persona {chr(65 + i % 26)}", f"persona{i}@example.com"
        for _ in range(ROUNDS):
            for text in prng.choice(SCRIPTS):
                if stop.is_set():
                    return
                post(phone, text.format(name=name, email=email))
                time.sleep(prng.uniform(0, 0.15))
            time.sleep(prng.uniform(0, 0.4))

    threads_done: list[BaseException] = []
    runner = threading.Thread(
        target=lambda: threads_done.extend(
            run_threads([lambda i=i: driver(i) for i in range(PHONES)], timeout=120)),
        daemon=True)
    runner.start()
    for _ in range(KILLS):
        before = len(answers)
        time.sleep(rng.uniform(0.5, 2.5))
        wait_until(lambda before=before: len(answers) > before + PHONES, timeout=30,
                   what="webhooks answered since the last restart")
        server.kill()
        server.start()
    time.sleep(rng.uniform(0.5, 1.5))
    stop.set()
    runner.join(150)
    assert not runner.is_alive(), "driver threads did not stop"
    assert not threads_done, threads_done

    def settled() -> bool:
        unsent = server.rows("SELECT count(*) AS n FROM messages WHERE direction = 'out' "
                             "AND status IN ('pending', 'sending')")[0]["n"]
        still_open = server.rows("SELECT count(*) AS n FROM sessions "
                                 "WHERE closed_at IS NULL")[0]["n"]
        return unsent == 0 and still_open == 0 and fake.in_flight == 0

    wait_until(settled, timeout=45, what="every session closed and the outbox drained",
               interval=0.2)

    # Every webhook that got a 200 is in messages, once.
    ok = {sid for sid, status in answers.items() if status == 200}
    other = {sid: status for sid, status in answers.items() if status != 200}
    assert not other, f"webhooks not answered 200 after retries: {other}"
    inbound = collections.Counter(
        r["twilio_sid"] for r in server.rows("SELECT twilio_sid FROM messages "
                                             "WHERE direction = 'in'"))
    assert ok <= set(inbound), f"200 but not stored: {sorted(ok - set(inbound))[:10]}"
    assert set(inbound) <= set(answers), "an inbound row nobody sent"
    assert max(inbound.values()) == 1

    # Every session consistent, and closed.
    sessions = assert_sessions_consistent(server.rows, allow_open=False)

    # Every timeout fired exactly once, with exactly one notice.
    expires = collections.Counter(r["session_id"] for r in server.rows(
        "SELECT session_id FROM session_events WHERE trigger = 'expire'"))
    notice = text_of("timeout_notice")
    notices = collections.Counter(r["session_id"] for r in server.rows(
        "SELECT session_id FROM messages WHERE direction = 'out' AND body = ?", (notice,)))
    timed_out = {s["id"] for s in sessions if s["close_reason"] == "timeout"}
    wrong = {s["id"]: (s["close_reason"], expires[s["id"]], notices[s["id"]])
             for s in sessions
             if (expires[s["id"]], notices[s["id"]]) != ((1, 1) if s["id"] in timed_out
                                                         else (0, 0))}
    assert not wrong, f"session: (reason, expire events, notices): {wrong}"
    wait_until(lambda: not server.rows("SELECT id FROM apscheduler_jobs "
                                       "WHERE id LIKE 'timeout:%'"),
               timeout=10, what="no timeout job left for closed sessions")

    # No outbound row lost: each one sent, and the fake got exactly that message.
    out = server.rows("SELECT m.id, m.status, m.attempts, m.twilio_sid, m.body, s.phone "
                      "FROM messages m JOIN sessions s ON s.id = m.session_id "
                      "WHERE m.direction = 'out' ORDER BY m.id")
    assert out
    bad = [r for r in out if r["status"] not in SENT or not r["twilio_sid"]
           or r["attempts"] < 1]
    assert not bad, f"outbound rows not sent: {bad[:10]}"
    assert not [r for r in out if r["status"] in UNSENT]
    delivered = fake.delivered
    by_sid = {r.sid: r for r in delivered}
    by_row_sid = {r["twilio_sid"]: r for r in out}
    for row in out:
        got = by_sid.get(row["twilio_sid"])
        assert got is not None, f"row {row['id']} has a SID the fake never issued"
        assert got.to == whatsapp(row["phone"])
        assert normalize(got.body) == normalize(row["body"]), (got.body, row["body"])
    for phone in {r["phone"] for r in out}:
        order = [by_row_sid[r.sid]["id"] for r in delivered
                 if r.to == whatsapp(phone) and r.sid in by_row_sid]
        assert order == sorted(order), f"{phone} received its messages out of order"

    # Duplicates: accepted by the fake, but no row holds the SID.
    duplicates = [r for r in delivered if r.sid not in by_row_sid]
    rows_by_phone: dict[str, set[str]] = collections.defaultdict(set)
    for row in out:
        rows_by_phone[whatsapp(row["phone"])].add(normalize(row["body"]))
    for dup in duplicates:
        assert normalize(dup.body) in rows_by_phone[dup.to], f"unexplained send {dup}"
    log = server.log_text()
    released = sum(int(n) for n in _RELEASED.findall(log))
    print(f"\nkill -9 under load: {len(answers)} webhooks ({len(ok)} answered 200, "
          f"{len(retried)} retried after a cut-off), {len(sessions)} sessions "
          f"{dict(collections.Counter(s['close_reason'] for s in sessions))}, "
          f"{len(out)} outbound rows, {KILLS} kills, "
          f"{released} row(s) in flight at the kills, duplicate sends: {len(duplicates)}")
    assert len(duplicates) <= released <= KILLS * 2 * DISPATCH_WORKERS
    assert len(duplicates) <= KILLS * DISPATCH_WORKERS
    assert log.count("Application startup complete") == KILLS + 1
    assert "database is locked" not in log
