"""An in-memory store: the engine's Store port without a database.

It keeps the SQL store's contract (tests/persistence/test_store_contract.py runs over
both), so the core can be exercised, or a flow tried, with nothing on disk:

- one lock serialises transactions, as BEGIN IMMEDIATE does on SQLite;
- a transaction works on a copy of the tables and publishes it only on a clean exit,
  and a savepoint keeps a copy to go back to, so an exception undoes exactly what it
  should;
- the SQL constraints hold: one open session per (channel, phone), a message id seen
  once, a trial per session, and every row belongs to an existing session;
- records are copied in and out (the context through JSON, as the SQL column stores
  it), so a caller's edits reach the store only through save_session.

Nothing survives the process; ops' tables, the outbox and the scheduler's jobs are
the SQL store's alone.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.core.choices import Choice
from engine.core.errors import StoreError
from engine.core.ports import Fence, SessionRecord, TrialRecord
from persistence.sealing import Sealer

__all__ = ["EventRow", "MemoryStore", "MemoryTx", "MessageRow", "TrialRow"]


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A row of `messages`, with the columns the port writes."""

    id: int
    session_id: int
    channel: str
    direction: str  # in | out
    twilio_sid: str | None
    body: str
    body_redacted: str | None
    status: str
    # As in SqlTx.enqueue: a body with a password is kept only sealed; `body` is redacted.
    body_sealed: str | None
    attempts: int
    created_at: datetime
    text_key: str | None = None
    choices: tuple[Choice, ...] = ()


@dataclass(frozen=True, slots=True)
class EventRow:
    """A row of `session_events`: one transition, for the audit."""

    id: int
    session_id: int
    at: datetime
    from_state: str | None
    to_state: str
    trigger: str
    detail: str | None


@dataclass(frozen=True, slots=True)
class TrialRow:
    """A row of `trials`: one trial issued, to the session that asked for it."""

    id: int
    phone: str
    username: str
    issued_at: datetime
    expires_at: datetime
    session_id: int


@dataclass
class _Tables:
    """Every table; rows are never changed in place, only replaced, so a shallow copy
    of the containers is a snapshot."""

    sessions: dict[int, SessionRecord] = field(default_factory=dict)
    messages: dict[int, MessageRow] = field(default_factory=dict)
    events: dict[int, EventRow] = field(default_factory=dict)
    trials: dict[int, TrialRow] = field(default_factory=dict)
    # The unique indexes: open sessions by (channel, phone), inbound message ids,
    # sessions that have their trial.
    open_sessions: dict[tuple[str, str], int] = field(default_factory=dict)
    message_ids: set[str] = field(default_factory=set)
    trial_sessions: set[int] = field(default_factory=set)
    # inbound_rates: (channel, phone) -> (window start, messages in the window).
    rates: dict[tuple[str, str], tuple[datetime, int]] = field(default_factory=dict)

    def copy(self) -> _Tables:
        return _Tables(
            dict(self.sessions), dict(self.messages), dict(self.events), dict(self.trials),
            dict(self.open_sessions), set(self.message_ids), set(self.trial_sessions),
            dict(self.rates),
        )


def _utc(moment: datetime) -> datetime:
    """As the SQL store returns times: UTC, with the zone attached (naive means UTC)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _context(value: dict[str, Any]) -> dict[str, Any]:
    # Through JSON, as the context column: what cannot be stored fails here too, and
    # the copy shares nothing with the caller's dict.
    copied: dict[str, Any] = json.loads(json.dumps(value, ensure_ascii=False))
    return copied


def _copy(record: SessionRecord) -> SessionRecord:
    return dataclasses.replace(record, context=_context(record.context))


class MemoryStore:
    """Serialised transactions on tables held in memory (engine.core.ports.Store)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables = _Tables()
        self.sealer = Sealer()

    @contextmanager
    def transaction(self) -> Iterator[MemoryTx]:
        with self._lock:
            tx = MemoryTx(self._tables.copy(), self.sealer)
            yield tx
            self._tables = tx.tables  # reached only on a clean exit: that is the commit

    # -- what ops would read: committed rows, in id order --------------------------------

    def sessions(self) -> list[SessionRecord]:
        with self._lock:
            return [_copy(s) for _, s in sorted(self._tables.sessions.items())]

    def messages(self) -> list[MessageRow]:
        with self._lock:
            return [row for _, row in sorted(self._tables.messages.items())]

    def events(self) -> list[EventRow]:
        with self._lock:
            return [row for _, row in sorted(self._tables.events.items())]

    def trials(self) -> list[TrialRow]:
        with self._lock:
            return [row for _, row in sorted(self._tables.trials.items())]


class MemoryTx:
    """One transaction on a private copy of the tables (engine.core.ports.StoreTx)."""

    def __init__(self, tables: _Tables, sealer: Sealer) -> None:
        self.tables = tables
        self.sealer = sealer

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        saved = self.tables.copy()
        try:
            yield
        except BaseException:
            self.tables = saved
            raise

    # -- sessions ------------------------------------------------------------------------

    def open_session(self, channel: str, phone: str) -> SessionRecord | None:
        session_id = self.tables.open_sessions.get((channel, phone))
        return None if session_id is None else self.get_session(session_id)

    def get_session(self, session_id: int, *, wait: bool = True) -> SessionRecord | None:
        # One transaction at a time holds the whole store: nobody else can hold the row.
        stored = self.tables.sessions.get(session_id)
        return None if stored is None else _copy(stored)

    def lock_conversations(self, keys: Iterable[tuple[str, str]]) -> None:
        """Already serialised: the store's one lock is held for the whole transaction."""

    def holds(self, fence: Fence) -> bool:
        """No worker shares a memory store, so no lease is ever taken from under one."""
        return True

    def create_session(
        self, *, channel: str, phone: str, flow: str, state: str, now: datetime,
        expires_at: datetime, context: dict[str, Any], flow_version: str | None = None,
    ) -> SessionRecord:
        self._claim_open(channel, phone)
        record = SessionRecord(
            id=_next_id(self.tables.sessions), channel=channel, phone=phone, flow=flow,
            state=state, started_at=_utc(now), last_inbound_at=_utc(now),
            expires_at=_utc(expires_at), version=1, context=_context(context),
            flow_version=flow_version,
        )
        self.tables.sessions[record.id] = record
        self.tables.open_sessions[(channel, phone)] = record.id
        return _copy(record)

    def save_session(self, record: SessionRecord, *, read_version: int) -> bool:
        stored = self.tables.sessions.get(record.id)
        if stored is None or stored.version != read_version:
            return False
        # The columns an UPDATE of the SQL store writes; who and what flow stay put.
        saved = dataclasses.replace(
            stored, state=record.state, last_inbound_at=_utc(record.last_inbound_at),
            expires_at=_utc(record.expires_at), context=_context(record.context),
            closed_at=None if record.closed_at is None else _utc(record.closed_at),
            close_reason=record.close_reason, version=read_version + 1,
            misses=record.misses, warned=record.warned, choices=record.choices,
            flow_version=record.flow_version,
        )
        key = (stored.channel, stored.phone)
        if self.tables.open_sessions.get(key) == stored.id:
            del self.tables.open_sessions[key]
        if saved.is_open:
            self._claim_open(*key)
            self.tables.open_sessions[key] = saved.id
        self.tables.sessions[saved.id] = saved
        record.version = read_version + 1
        return True

    def _claim_open(self, channel: str, phone: str) -> None:
        other = self.tables.open_sessions.get((channel, phone))
        if other is not None:
            raise StoreError(
                f"database error: session {other} is already open for channel "
                f"{channel!r} and phone {phone!r} (one open session per channel and phone)"
            )

    # -- messages and events -------------------------------------------------------------

    def record_inbound(
        self, *, session_id: int, channel: str, message_id: str | None, body: str, now: datetime
    ) -> bool:
        self._session_exists(session_id, "messages")
        if message_id is not None and message_id in self.tables.message_ids:
            return False
        self._add_message(session_id, channel, "in", message_id, body, None, "received", now)
        if message_id is not None:
            self.tables.message_ids.add(message_id)
        return True

    def count_inbound(
        self, *, channel: str, phone: str, now: datetime, window: timedelta
    ) -> int:
        start, count = self.tables.rates.get((channel, phone), (now, 0))
        if start <= now - window:
            start, count = now, 0
        self.tables.rates[(channel, phone)] = (start, count + 1)
        return count + 1

    def enqueue(
        self, *, session_id: int, channel: str, body: str, now: datetime,
        redacted: str | None = None, key: str | None = None, choices: tuple[Choice, ...] = (),
    ) -> int:
        self._session_exists(session_id, "messages")
        return self._add_message(session_id, channel, "out", None, body, redacted, "pending",
                                 now, key=key, choices=choices)

    def _add_message(
        self, session_id: int, channel: str, direction: str, sid: str | None, body: str,
        redacted: str | None, status: str, now: datetime, *, key: str | None = None,
        choices: tuple[Choice, ...] = (),
    ) -> int:
        row = MessageRow(
            id=_next_id(self.tables.messages), session_id=session_id, channel=channel,
            direction=direction, twilio_sid=sid, body=body if redacted is None else redacted,
            body_redacted=None, status=status, attempts=0, created_at=_utc(now),
            body_sealed=self.sealer.seal(body) if redacted is not None else None,
            text_key=key, choices=choices,
        )
        self.tables.messages[row.id] = row
        return row.id

    def add_event(
        self, *, session_id: int, from_state: str | None, to_state: str, trigger: str,
        detail: str | None, at: datetime,
    ) -> None:
        self._session_exists(session_id, "session_events")
        row = EventRow(_next_id(self.tables.events), session_id, _utc(at), from_state,
                       to_state, trigger, detail)
        self.tables.events[row.id] = row

    # -- trials --------------------------------------------------------------------------

    def latest_trial(self, phone: str) -> TrialRecord | None:
        mine = [t for t in self.tables.trials.values() if t.phone == phone]
        if not mine:
            return None
        latest = max(mine, key=lambda t: t.issued_at)
        return TrialRecord(latest.phone, latest.username, latest.issued_at, latest.expires_at)

    def add_trial(self, trial: TrialRecord, *, session_id: int) -> None:
        self._session_exists(session_id, "trials")
        if session_id in self.tables.trial_sessions:
            raise StoreError(f"database error: session {session_id} already has a trial "
                             "(one trial per session)")
        row = TrialRow(_next_id(self.tables.trials), trial.phone, trial.username,
                       _utc(trial.issued_at), _utc(trial.expires_at), session_id)
        self.tables.trials[row.id] = row
        self.tables.trial_sessions.add(session_id)

    def _session_exists(self, session_id: int, table: str) -> None:
        if session_id not in self.tables.sessions:
            raise StoreError(f"database error: a row of {table} for session {session_id}, "
                             "which does not exist (foreign key)")


def _next_id(table: dict[int, Any]) -> int:
    """max + 1, as SQLite gives a rowid: an id rolled back is handed out again.

    Rows are never deleted, so the ids are 1..len and max + 1 is len + 1.
    """
    return len(table) + 1
