"""What the reliability tests share: the trial flow's declared states, the consistency
checks ops could run with sqlite3, and a fake whose faults are seeded per recipient."""

from __future__ import annotations

import collections
import itertools
import random
import re
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from engine.flowfiles import load_flows
from tests.e2e.harness import FLOWS, RecipientFakeTwilio
from tests.fakes.twilio_fake import _Decision, default_error_code

Rows = Callable[..., list[dict[str, Any]]]

# The flow under test, loaded by path as `serve` loads it (FLOWS_DIR).
TRIAL = load_flows(FLOWS, "trial").get("trial")
STATES = frozenset(TRIAL.states)
FINAL = frozenset(TRIAL.final)
OPEN = STATES - FINAL

# DESIGN.md, "Tables": close_reason -> the final state it leads to.
REASON_STATE = {
    "credentials_delivered": "closed", "trial_refused": "closed", "goodbye": "closed",
    "keyword": "closed", "admin": "closed", "error": "closed",
    "cancelled": "cancelled", "timeout": "timeout",
}

# Outbound statuses that mean "handed to Twilio" (the create call answered 201).
SENT = frozenset({"accepted", "scheduled", "queued", "sent", "delivered", "read"})
UNSENT = frozenset({"pending", "sending"})

_PASSWORD = re.compile(r"(Contraseña: )\S+")


def normalize(body: str) -> str:
    """A body as both sides can compare it: the password is redacted in the row once
    sent, while the fake saw it in clear."""
    return _PASSWORD.sub(r"\1<password>", body)


def text_of(key: str, **values: object) -> str:
    return TRIAL.render(key, values)


def assert_sessions_consistent(rows: Rows, *, allow_open: bool = True) -> list[dict[str, Any]]:
    """The invariants of DESIGN.md's tables, as ops would check them; returns sessions.

    - every state is declared by flows/trial.py;
    - open sessions are in open states, at most one per (channel, phone);
    - a closed session's close_reason leads to its state (the DESIGN.md table);
    - the audit trail starts with 'start' into the initial state, each event starts
      where the previous one ended, and the last one ends in the session's state;
    - every session has its inbound message, every inbound row has its session.
    """
    sessions = rows("SELECT * FROM sessions ORDER BY id")
    problems: list[str] = []
    open_by_phone = collections.Counter(
        (s["channel"], s["phone"]) for s in sessions if s["closed_at"] is None)
    for key, count in open_by_phone.items():
        if count > 1:
            problems.append(f"{count} open sessions for {key}")
    events: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for e in rows("SELECT * FROM session_events ORDER BY id"):
        events[e["session_id"]].append(e)
    inbound = collections.Counter(
        r["session_id"] for r in rows("SELECT session_id FROM messages WHERE direction = 'in'"))
    for s in sessions:
        sid, state, reason = s["id"], s["state"], s["close_reason"]
        if state not in STATES:
            problems.append(f"session {sid}: undeclared state {state!r}")
        if s["closed_at"] is None:
            if not allow_open:
                problems.append(f"session {sid} still open in {state!r}")
            if state not in OPEN or reason is not None:
                problems.append(f"session {sid}: open but state={state!r} reason={reason!r}")
        elif REASON_STATE.get(reason) != state:
            problems.append(f"session {sid}: closed with reason {reason!r} in state {state!r}")
        trail = events.get(sid, [])
        if not trail or trail[0]["trigger"] != "start" or trail[0]["from_state"] is not None \
                or trail[0]["to_state"] != TRIAL.initial:
            problems.append(f"session {sid}: audit trail does not begin with start: {trail[:1]}")
        for before, after in itertools.pairwise(trail):
            if after["from_state"] != before["to_state"]:
                problems.append(f"session {sid}: event {after['id']} starts in "
                                f"{after['from_state']!r} after {before['to_state']!r}")
        if trail and trail[-1]["to_state"] != state:
            problems.append(f"session {sid}: last event ends in {trail[-1]['to_state']!r}, "
                            f"the row says {state!r}")
        if not inbound.get(sid):
            problems.append(f"session {sid} has no inbound message")
    orphans = rows("SELECT m.id FROM messages m LEFT JOIN sessions s ON s.id = m.session_id "
                   "WHERE s.id IS NULL")
    if orphans:
        problems.append(f"messages without a session: {orphans[:5]}")
    assert not problems, "\n".join(problems[:30])
    return sessions


def table_counts(rows: Rows) -> dict[str, int]:
    return {t: rows(f"SELECT count(*) AS n FROM {t}")[0]["n"]
            for t in ("sessions", "messages", "session_events", "trials")}


def run_threads(targets: Iterable[Callable[[], None]], timeout: float) -> list[BaseException]:
    """Run each target in a thread, join them (bounded), return what they raised."""
    errors: list[BaseException] = []
    lock = threading.Lock()

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    alive = [t for t in threads if t.is_alive()]
    if alive:
        errors.append(AssertionError(f"{len(alive)} thread(s) still running after {timeout} s"))
    return errors


class SeededFaultsFake(RecipientFakeTwilio):
    """FakeTwilio whose probabilistic faults are drawn from one seeded RNG per recipient.

    `FakeTwilio.fail_rates` draws every request's fault from one shared RNG, so with
    several recipients in flight which row gets which fault depends on thread timing,
    and once in a while one row collects six or seven failures in a row: with the
    dispatcher's exponential backoff that alone costs one to two minutes. Here each
    recipient's requests draw from `Random(f"{seed}:{to}")`, with exactly the shared
    RNG's semantics (500 with `error_500`, else 429 with `error_429`; independently an
    extra `slow_seconds` with `slow`). A recipient's requests are sequential (the
    outbox keeps order per recipient), so its sequence of outcomes depends on the seed
    only, and `outcomes(to, n)` predicts it.

    The recipient is read from the calling frame, as `RecipientFakeTwilio` does.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rates: tuple[float, float, float, float, int] | None = None
        self._rngs: dict[str, random.Random] = {}

    def recipient_fail_rates(self, error_500: float, error_429: float, slow: float,
                             slow_seconds: float, seed: int) -> None:
        with self._lock:
            self._rates = (error_500, error_429, slow, slow_seconds, seed)
            self._rngs.clear()

    @staticmethod
    def draw(rng: random.Random, rates: tuple[float, float, float, float, int]
             ) -> tuple[int, bool]:
        """(status, slow) of one request, as FakeTwilio._decide draws them."""
        p500, p429, p_slow, _, _ = rates
        status = 201
        r = rng.random()
        if r < p500:
            status = 500
        elif r < p500 + p429:
            status = 429
        return status, rng.random() < p_slow

    def outcomes(self, to: str, n: int) -> list[tuple[int, bool]]:
        assert self._rates is not None
        rng = random.Random(f"{self._rates[4]}:{to}")
        return [self.draw(rng, self._rates) for _ in range(n)]

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._rates = None
            self._rngs.clear()

    def _decide(self) -> _Decision:
        form = sys._getframe(1).f_locals.get("form")  # read by RecipientFakeTwilio too
        if not isinstance(form, dict):
            raise RuntimeError("SeededFaultsFake: FakeTwilio._decide's caller has no 'form'")
        with self._lock:
            rates, to = self._rates, form.get("To", "")
            scripted = bool(self._per_to.get(to)) or bool(self._script)
            if rates is not None and not scripted:
                rng = self._rngs.setdefault(to, random.Random(f"{rates[4]}:{to}"))
                status, slow = self.draw(rng, rates)
                delay = self._latency + (rates[3] if slow else 0.0)
                code = None if status == 201 else default_error_code(status)
                return _Decision(status, code, delay)
        return super()._decide()
