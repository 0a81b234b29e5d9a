"""The shipped trial flow as tests see it: its declared states and texts, and the
consistency checks ops could run on its tables with sqlite3."""

from __future__ import annotations

import collections
import itertools
import re
from collections.abc import Callable
from typing import Any

from engine.flowfiles import load_flows
from tests.support.paths import FLOWS

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
    # The credentials message never arrived (persistence/outbox.py, give_up).
    "credentials_undelivered": "closed",
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
