"""Outbox queries: which rows to send next, and recording what became of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, delete, func, select, text, update

from engine.core import choices as offers
from engine.core.choices import Choice
from engine.core.ports import Outbound
from persistence.models import messages, sessions, trials
from persistence.store import SqlStore, SqlTx, TxRunner

__all__ = [
    "CREDENTIAL_SENDS",
    "STATUS_RANK",
    "UNDELIVERED",
    "OutRow",
    "apply_status",
    "claim",
    "claimants",
    "deliver_console",
    "forget_sealed",
    "give_up",
    "has_due",
    "mark_delivered",
    "mark_sent",
    "pending_count",
    "record_failure",
    "record_retry",
    "record_sent",
    "release_claims",
    "reserve_slot",
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


@dataclass(frozen=True, slots=True)
class OutRow:
    id: int
    phone: str
    body: str
    log_body: str  # what may appear in a log: the redacted copy when there is one
    attempts: int
    last_inbound_at: datetime
    choices: tuple[Choice, ...] = ()
    key: str | None = None  # "flow.text": which text of which flow the body came from
    # A sealed body this process's key cannot open (CREDENTIALS_KEY changed, or it was
    # a process-only key before a restart): it cannot be sent, only given up.
    unreadable: bool = False


def claim(
    tx: SqlTx, *, channel: str, now: datetime, worker: str, claim_until: datetime, limit: int
) -> list[OutRow]:
    """Claim the oldest unsent row of up to `limit` recipients for `worker`.

    One row per recipient, and only where nothing of that recipient is in flight (its
    oldest unsent row is ours to send or nobody's), so order per recipient holds across
    workers. Recipients come oldest head first, so one with a long backlog takes one
    slot per round like everyone else. A claim past `claim_until` (its worker died or
    froze) may be taken over. On PostgreSQL, workers claiming at once skip each other's
    rows (SKIP LOCKED); on SQLite the write lock serialises them.
    """
    d = tx.driver
    rows = tx.execute(
        _CLAIM + (" FOR UPDATE OF m SKIP LOCKED" if d.postgres else ""),
        channel=channel, now=d.time_out(now), limit=limit,
    ).fetchall()
    if not rows:
        return []
    ids = {f"id{i}": row[0] for i, row in enumerate(rows)}
    tx.execute(
        "UPDATE messages SET status = 'sending', claimed_by = :worker, "
        f"claim_until = :until WHERE id IN ({', '.join(':' + k for k in ids)})",
        worker=worker, until=d.time_out(claim_until), **ids,
    )
    return [_out_row(tx, r, now) for r in rows]


def _out_row(tx: SqlTx, r: Any, now: datetime) -> OutRow:
    log_body = r[2] or r[1]
    last_inbound = tx.driver.time_in(r[5]) or now
    choices = offers.load(r[6])
    key = f"{r[7]}.{r[8]}" if r[8] else None
    if r[9] is None:
        return OutRow(r[0], r[4], r[1], log_body, r[3], last_inbound, choices, key)
    clear = tx.sealer.open(r[9])
    return OutRow(r[0], r[4], clear or "", log_body, r[3], last_inbound, choices, key,
                  unreadable=clear is None)


_HEADS = (
    "SELECT MIN(h.id) FROM messages h JOIN sessions hs ON hs.id = h.session_id "
    "WHERE h.channel = :channel AND h.direction = 'out' "
    "AND h.status IN ('pending', 'sending') AND (h.status = 'pending' OR h.twilio_sid IS NULL) "
    "GROUP BY hs.phone"
)
_CLAIM = (
    "SELECT m.id, m.body, m.body_redacted, m.attempts, s.phone, s.last_inbound_at, "
    "m.choices, s.flow, m.text_key, m.body_sealed "
    "FROM messages m JOIN sessions s ON s.id = m.session_id "
    f"WHERE m.id IN ({_HEADS}) AND ("
    "(m.status = 'pending' AND (m.next_attempt_at IS NULL OR m.next_attempt_at <= :now)) "
    "OR (m.status = 'sending' AND m.twilio_sid IS NULL "
    "AND (m.claim_until IS NULL OR m.claim_until <= :now))) "
    "ORDER BY m.id LIMIT :limit"
)


def reserve_slot(
    tx: SqlTx, *, row_id: int, worker: str, claim_until: datetime, sender: str, now: float,
    interval: float,
) -> float | None:
    """Extend our claim on the row and take the sender's next send slot (epoch seconds);
    None, and no slot taken, when the claim is no longer ours."""
    d = tx.driver
    held = tx.execute(
        "UPDATE messages SET claim_until = :until WHERE id = :id AND claimed_by = :worker "
        "AND status = 'sending'", until=d.time_out(claim_until), id=row_id, worker=worker,
    ).rowcount
    if held != 1:
        return None
    greatest = "GREATEST" if d.postgres else "MAX"
    for _ in range(2):
        row = tx.execute(
            f"UPDATE send_slots SET next_slot = {greatest}(next_slot, :now) + :interval "
            "WHERE sender = :sender RETURNING next_slot",
            now=now, interval=interval, sender=sender,
        ).fetchone()
        if row is not None:
            return float(row[0]) - interval
        # The sender's first send: workers racing to create the row all succeed, one of
        # them inserting it (the others wait for it, then do nothing).
        tx.execute("INSERT INTO send_slots (sender, next_slot) VALUES (:sender, 0) "
                   "ON CONFLICT DO NOTHING", sender=sender)
    raise AssertionError("the send_slots row exists by now")


def claimants(store: SqlStore, channel: str) -> list[str]:
    """The workers that hold claims on unsent rows of `channel` now."""
    with store.reading() as conn:
        result = conn.execute(text(
            "SELECT DISTINCT claimed_by FROM messages WHERE channel = :channel "
            "AND status = 'sending' AND twilio_sid IS NULL AND claimed_by IS NOT NULL"),
            {"channel": channel})
        return [str(row[0]) for row in result]


def release_claims(store: SqlStore, channel: str, worker: str) -> int:
    """A worker's unsent claims go back to pending for the others: its own at a clean
    stop, or a dead worker's."""
    with store.transaction() as tx:
        cursor = tx.execute(
            "UPDATE messages SET status = 'pending', claimed_by = NULL, claim_until = NULL "
            "WHERE channel = :channel AND status = 'sending' AND twilio_sid IS NULL "
            "AND claimed_by = :worker", channel=channel, worker=worker,
        )
        return int(cursor.rowcount)


# Every outcome is recorded only while the worker's claim holds: a row another worker
# took over (this one froze past the claim) is that worker's to record. Each returns
# whether it was recorded.


def record_sent(write: TxRunner, row_id: int, *, worker: str, sid: str, status: str,
                now: datetime) -> bool:
    params = {"row_id": row_id, "worker": worker, "new_status": status, "sid": sid, "now": now}
    return bool(write(lambda tx: tx.conn.execute(_SENT, params).rowcount))


def record_retry(write: TxRunner, row_id: int, *, worker: str, code: int | None,
                 next_at: datetime) -> bool:
    statement = update(messages).where(_claimed(row_id, worker)).values(
        status="pending", error_code=code, attempts=messages.c.attempts + 1,
        next_attempt_at=next_at, claim_until=None,
    )
    return bool(write(lambda tx: tx.conn.execute(statement).rowcount))


def record_failure(
    write: TxRunner, row_id: int, *, worker: str, status: str, code: int | None,
    now: datetime, count_attempt: bool = True,
) -> bool:
    """A final outcome without a send: failed, skipped_window or dry_run."""
    attempts = messages.c.attempts + 1 if count_attempt else messages.c.attempts
    # Once a row leaves the outbox, a body that carried a password keeps only its redaction.
    statement = update(messages).where(_claimed(row_id, worker)).values(
        sent_at=now if status == "dry_run" else None, body=_redacted_body(),
        body_redacted=None, status=status, error_code=code, attempts=attempts,
        claim_until=None,
    )

    def run(tx: SqlTx) -> bool:
        if not tx.conn.execute(statement).rowcount:
            return False
        if status == "dry_run":
            forget_sealed(tx, row_id)  # it went to the log: nothing to send again
        else:
            give_up(tx, row_id, f"not sent: {status}" + (f" ({code})" if code else ""), now)
        return True

    return bool(write(run))


def _claimed(row_id: int, worker: str) -> ColumnElement[bool]:
    m = messages.c
    return and_(m.id == row_id, m.claimed_by == worker, m.status == "sending")


def _redacted_body() -> object:
    return case((messages.c.body_redacted.is_not(None), messages.c.body_redacted),
                else_=messages.c.body)


# Built once: every send records one, and building the statement cost more than running
# it. A retried row that got through keeps no error code from its failed tries.
_SENT = update(messages).where(
    messages.c.id == bindparam("row_id"), messages.c.claimed_by == bindparam("worker"),
    messages.c.status == "sending",
).values(
    status=bindparam("new_status"), twilio_sid=bindparam("sid"), sent_at=bindparam("now"),
    error_code=None, next_attempt_at=None, attempts=messages.c.attempts + 1,
    body=_redacted_body(), body_redacted=None, claim_until=None,
)


def apply_status(tx: SqlTx, sid: str, status: str, code: int | None,
                 now: datetime | None = None) -> str | None:
    """Apply a status callback; returns the row's status after it, or None for unknown sids.

    A late callback never moves a status backwards, so repeats and reorderings are no-ops.
    A credentials message (a sealed body) that ends undelivered or failed goes back to
    the outbox, up to CREDENTIAL_SENDS sends in all; then it is given up (give_up).
    """
    m = messages.c
    row = tx.conn.execute(
        select(m.id, m.status, m.attempts, m.body_sealed).where(m.twilio_sid == sid)
    ).first()
    if row is None:
        return None
    current = STATUS_RANK.get(row.status, -1)
    if current >= 5 or STATUS_RANK.get(status, -1) <= current:
        return str(row.status)
    tx.conn.execute(update(messages).where(m.id == row.id).values(
        status=status, error_code=code if code is not None else m.error_code,
    ))
    if row.body_sealed is None:
        return status
    now = now or datetime.now(UTC)
    if status in ("delivered", "read"):
        forget_sealed(tx, row.id)
    elif STATUS_RANK[status] >= 5 and row.attempts < CREDENTIAL_SENDS:
        return _send_again(tx, row.id, f"Twilio reported {status} ({code}) for {sid}", now)
    elif STATUS_RANK[status] >= 5:
        give_up(tx, row.id, f"Twilio reported {status} ({code}) for {sid}, "
                f"after {row.attempts} sends", now)
    return status


# How many times in all a credentials message is sent while Twilio reports it failed.
CREDENTIAL_SENDS = 3
UNDELIVERED = "credentials_undelivered"


def _send_again(tx: SqlTx, row_id: int, why: str, now: datetime) -> str:
    """Back to the outbox, at the head of its recipient's queue (its id is the oldest);
    the dispatcher skips it, and gives it up, once outside the 24-hour window."""
    tx.conn.execute(update(messages).where(messages.c.id == row_id).values(
        status="pending", twilio_sid=None, claimed_by=None, claim_until=None,
        next_attempt_at=None,
    ))
    _event(tx, row_id, "credentials_resent", f"{why}; sent again", now)
    return "pending"


def give_up(tx: SqlTx, row_id: int, why: str, now: datetime) -> None:
    """A credentials message that will not reach its user: its trial is withdrawn and
    its session closes as undelivered, so the cooldown does not refuse the user who
    asks again (a row without a sealed body is not one: nothing happens)."""
    found = tx.conn.execute(select(messages.c.session_id).where(
        messages.c.id == row_id, messages.c.body_sealed.is_not(None))).first()
    if found is None:
        return
    forget_sealed(tx, row_id)
    tx.conn.execute(delete(trials).where(trials.c.session_id == found.session_id))
    tx.conn.execute(update(sessions).where(
        sessions.c.id == found.session_id, sessions.c.closed_at.is_not(None),
    ).values(close_reason=UNDELIVERED, version=sessions.c.version + 1))
    _event(tx, row_id, UNDELIVERED, f"{why}; trial withdrawn, the user may ask again", now)


def forget_sealed(tx: SqlTx, row_id: int | None = None, *, sent_before: datetime | None = None
                  ) -> int:
    """Drop sealed bodies: one row's, or those of rows sent before `sent_before` (past
    the 24-hour window nothing can be sent again)."""
    m = messages.c
    where = m.id == row_id if row_id is not None else and_(
        m.body_sealed.is_not(None), m.sent_at < sent_before)
    return int(tx.conn.execute(update(messages).where(where).values(body_sealed=None)).rowcount)


def _event(tx: SqlTx, row_id: int, trigger: str, detail: str, now: datetime) -> None:
    row = tx.conn.execute(
        select(sessions.c.id, sessions.c.state).join(messages, messages.c.session_id ==
                                                     sessions.c.id).where(messages.c.id == row_id)
    ).first()
    if row is not None:
        tx.add_event(session_id=row.id, from_state=row.state, to_state=row.state,
                     trigger=trigger, detail=detail[:500], at=now)


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
        select(messages.c.id, messages.c.session_id, messages.c.body, messages.c.choices,
               messages.c.text_key, messages.c.body_sealed)
        .join(sessions, sessions.c.id == messages.c.session_id)
        .where(messages.c.status == "pending", messages.c.channel == "console",
               messages.c.direction == "out", sessions.c.phone == phone)
        .order_by(messages.c.id)
    )
    with store.reading() as conn:
        rows = conn.execute(query).all()
    return [Outbound(r.id, r.session_id, "console", phone,
                     store.sealer.body(r.body, r.body_sealed), offers.load(r.choices),
                     r.text_key) for r in rows]


def mark_sent(store: SqlStore, ids: Sequence[int], *, status: str, now: datetime) -> None:
    """Record delivery of several rows at once (the console channel)."""
    if ids:
        statement = update(messages).where(messages.c.id.in_(list(ids))).values(
            status=status, sent_at=now, body=_redacted_body(), body_redacted=None,
            body_sealed=None,
        )
        store.run(lambda tx: tx.conn.execute(statement))


def mark_delivered(tx: SqlTx, ids: Sequence[int], now: datetime) -> None:
    """The simulated phone of the web console received these rows (in the caller's write).

    Only rows still pending change, so two browsers on one phone record it once.
    """
    if ids:
        tx.conn.execute(update(messages).where(
            messages.c.id.in_(list(ids)), messages.c.status == "pending",
        ).values(status="delivered", sent_at=now, body=_redacted_body(), body_redacted=None,
                 body_sealed=None))


def deliver_console(store: SqlStore, phone: str, now: datetime) -> list[Outbound]:
    """Claim every pending console message for `phone`; the caller prints them."""
    pending = pending_console(store, phone)
    mark_sent(store, [o.id for o in pending], status="delivered", now=now)
    return pending
