"""Outbox queries: which rows to send next, and recording what became of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, bindparam, case, func, select, text, update

from engine.core.ports import Outbound
from persistence.models import messages, sessions
from persistence.store import SqlStore, SqlTx, TxRunner

__all__ = [
    "STATUS_RANK",
    "OutRow",
    "apply_status",
    "claim_heads",
    "deliver_console",
    "has_due",
    "mark_delivered",
    "mark_sent",
    "pending_count",
    "record_failure",
    "record_retry",
    "record_sent",
    "release_sending",
    "unsent",
]

# Twilio's statuses only move forward; undelivered and failed are final (rank 5).
STATUS_RANK = {"accepted": 0, "scheduled": 0, "queued": 0, "sending": 1, "sent": 2,
               "delivered": 3, "read": 4, "undelivered": 5, "failed": 5}


def unsent() -> ColumnElement[bool]:
    """Rows still in the outbox. `sending` without a Twilio SID is our own claim of a row
    in flight; with a SID it is Twilio's status of a message it already has."""
    m = messages.c
    # The literal term lets SQLite use the partial index ix_messages_outbox, whose WHERE
    # it must find verbatim (a bound parameter does not match): without it every claim
    # scanned the whole history of messages, 38 ms a round at 237k rows.
    return and_(text(_OUTBOX_PREDICATE),
                (m.status == "pending") | ((m.status == "sending") & m.twilio_sid.is_(None)))


_OUTBOX_PREDICATE = "status IN ('pending', 'sending')"
_SCAN = 500  # rows looked at per claim; heads of later recipients come next round


@dataclass(frozen=True, slots=True)
class OutRow:
    id: int
    phone: str
    body: str
    log_body: str  # what may appear in a log: the redacted copy when there is one
    attempts: int
    last_inbound_at: datetime


def claim_heads(
    store: SqlStore, write: TxRunner, *, channel: str, now: datetime, busy: set[str], limit: int
) -> list[OutRow]:
    """The oldest unsent row of each recipient not busy or backing off, marked `sending`.

    Order per recipient holds because a recipient's later rows wait behind its head.
    Only the lock holder's single loop claims, so a `sending` row whose recipient is not
    `busy` in that loop lost its bookkeeping (a failed write after the send): it is
    claimed again rather than left to block the recipient until a restart.
    """
    heads: list[OutRow] = []
    seen: set[str] = set(busy)
    # The rows in flight come first in id order: they must not use up the scan, or a
    # claim with a few free workers sees only them and finds nothing to send.
    scan = min(_SCAN, len(busy) + 8 * limit)
    # Read without the write lock: only the lock holder's single loop claims rows.
    with store.reading() as conn:
        for row in conn.execute(_HEADS, {"channel": channel, "scan": scan}):
            if row.phone in seen:
                continue
            seen.add(row.phone)
            stale_claim = row.status == "sending"
            if stale_claim or row.next_attempt_at is None or row.next_attempt_at <= now:
                heads.append(OutRow(row.id, row.phone, row.body, row.body_redacted or row.body,
                                    row.attempts, row.last_inbound_at))
                if len(heads) >= limit:
                    break
    if heads:
        ids = [h.id for h in heads]
        write(lambda tx: tx.conn.execute(_CLAIM, {"ids": ids}))
    return heads


# Built once, like _SENT below: the dispatcher claims often, and building the join and
# its cache key showed in its profile next to running it.
_HEADS = (
    select(messages.c.id, messages.c.body, messages.c.body_redacted, messages.c.attempts,
           messages.c.status, messages.c.next_attempt_at, sessions.c.phone,
           sessions.c.last_inbound_at)
    .join(sessions, sessions.c.id == messages.c.session_id)
    .where(messages.c.channel == bindparam("channel"), messages.c.direction == "out",
           unsent())
    .order_by(messages.c.id).limit(bindparam("scan"))
)
_CLAIM = update(messages).where(messages.c.id.in_(bindparam("ids", expanding=True))) \
    .values(status="sending")


def release_sending(store: SqlStore, channel: str) -> int:
    """At start: rows a crash left `sending` go back to pending (they may be sent twice)."""
    with store.transaction() as tx:
        result = tx.conn.execute(
            update(messages).where(messages.c.channel == channel, messages.c.status == "sending",
                                   messages.c.twilio_sid.is_(None))
            .values(status="pending")
        )
    return int(result.rowcount)


def record_sent(write: TxRunner, row_id: int, *, sid: str, status: str, now: datetime) -> None:
    params = {"row_id": row_id, "new_status": status, "sid": sid, "now": now}
    write(lambda tx: tx.conn.execute(_SENT, params))


def record_retry(write: TxRunner, row_id: int, *, code: int | None, next_at: datetime) -> None:
    statement = update(messages).where(messages.c.id == row_id).values(
        status="pending", error_code=code, attempts=messages.c.attempts + 1,
        next_attempt_at=next_at,
    )
    write(lambda tx: tx.conn.execute(statement))


def record_failure(
    write: TxRunner, row_id: int, *, status: str, code: int | None, now: datetime,
    count_attempt: bool = True,
) -> None:
    """A final outcome without a send: failed, skipped_window or dry_run."""
    attempts = messages.c.attempts + 1 if count_attempt else messages.c.attempts
    _finish(write, row_id, now=now if status == "dry_run" else None, status=status,
            error_code=code, attempts=attempts)


def _finish(write: TxRunner, row_id: int, *, now: datetime | None, **values: object) -> None:
    # Once a row leaves the outbox, a body that carried a password keeps only its redaction.
    statement = update(messages).where(messages.c.id == row_id).values(
        sent_at=now, body=_redacted_body(), body_redacted=None, **values,
    )
    write(lambda tx: tx.conn.execute(statement))


def _redacted_body() -> object:
    return case((messages.c.body_redacted.is_not(None), messages.c.body_redacted),
                else_=messages.c.body)


# Built once: every send records one, and building the statement cost more than running
# it. A retried row that got through keeps no error code from its failed tries.
_SENT = update(messages).where(messages.c.id == bindparam("row_id")).values(
    status=bindparam("new_status"), twilio_sid=bindparam("sid"), sent_at=bindparam("now"),
    error_code=None, next_attempt_at=None, attempts=messages.c.attempts + 1,
    body=_redacted_body(), body_redacted=None,
)


def apply_status(tx: SqlTx, sid: str, status: str, code: int | None) -> str | None:
    """Apply a status callback; returns the row's status after it, or None for unknown sids.

    A late callback never moves a status backwards, so repeats and reorderings are no-ops.
    """
    row = tx.conn.execute(
        select(messages.c.id, messages.c.status).where(messages.c.twilio_sid == sid)
    ).first()
    if row is None:
        return None
    current = STATUS_RANK.get(row.status, -1)
    if current >= 5 or STATUS_RANK.get(status, -1) <= current:
        return str(row.status)
    tx.conn.execute(update(messages).where(messages.c.id == row.id).values(
        status=status, error_code=code if code is not None else messages.c.error_code,
    ))
    return status


def has_due(store: SqlStore, *, channel: str, now: datetime) -> bool:
    """Whether a pending row is due now (not waiting out a backoff)."""
    m = messages.c
    with store.reading() as conn:
        return conn.execute(
            select(m.id).where(m.channel == channel, text(_OUTBOX_PREDICATE),
                               m.status == "pending",
                               (m.next_attempt_at.is_(None)) | (m.next_attempt_at <= now))
            .limit(1)
        ).first() is not None


def pending_count(store: SqlStore, channel: str = "whatsapp") -> int:
    with store.reading() as conn:
        return int(conn.execute(
            select(func.count()).select_from(messages).where(
                messages.c.channel == channel, unsent())
        ).scalar_one())


def pending_console(store: SqlStore, phone: str) -> list[Outbound]:
    """Pending console rows for one phone, oldest first."""
    query = (
        select(messages.c.id, messages.c.session_id, messages.c.body)
        .join(sessions, sessions.c.id == messages.c.session_id)
        .where(messages.c.status == "pending", messages.c.channel == "console",
               messages.c.direction == "out", sessions.c.phone == phone)
        .order_by(messages.c.id)
    )
    with store.reading() as conn:
        rows = conn.execute(query).all()
    return [Outbound(r.id, r.session_id, "console", phone, r.body) for r in rows]


def mark_sent(store: SqlStore, ids: Sequence[int], *, status: str, now: datetime) -> None:
    """Record delivery of several rows at once (the console channel)."""
    if ids:
        statement = update(messages).where(messages.c.id.in_(list(ids))).values(
            status=status, sent_at=now, body=_redacted_body(), body_redacted=None,
        )
        store.run(lambda tx: tx.conn.execute(statement))


def mark_delivered(tx: SqlTx, ids: Sequence[int], now: datetime) -> None:
    """The simulated phone of the web console received these rows (in the caller's write).

    Only rows still pending change, so two browsers on one phone record it once.
    """
    if ids:
        tx.conn.execute(update(messages).where(
            messages.c.id.in_(list(ids)), messages.c.status == "pending",
        ).values(status="delivered", sent_at=now, body=_redacted_body(), body_redacted=None))


def deliver_console(store: SqlStore, phone: str, now: datetime) -> list[Outbound]:
    """Claim every pending console message for `phone`; the caller prints them."""
    pending = pending_console(store, phone)
    mark_sent(store, [o.id for o in pending], status="delivered", now=now)
    return pending
