"""The tables ops read with sqlite3: plain columns, UTC times, JSON only for context."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Base", "Heartbeat", "InboundRate", "Lease", "Message", "SendSlot", "Session",
    "SessionEvent", "Trial", "UTCDateTime", "heartbeats", "inbound_rates", "leases", "messages",
    "send_slots", "session_events", "sessions", "trials",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Naive UTC in the column (so `expires_at < datetime('now')` works), aware in Python."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class Session(Base):
    """One conversation. At most one open row per (channel, phone)."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    phone: Mapped[str] = mapped_column(String(32))
    flow: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime]
    last_inbound_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    close_reason: Mapped[str | None] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer, default=1)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The engine's bookkeeping, apart from the flow's context: messages not understood
    # in a row, and whether this idle stretch already got the "¿Seguís ahí?" notice.
    misses: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    warned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The choices a reply may pick now, by number or words (JSON: [{"id", "title"}]).
    choices: Mapped[str | None] = mapped_column(Text)
    # A hash of the flow definition the session runs (engine.core.flow.flow_version).
    flow_version: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (
        Index(
            "uq_sessions_open_phone", "channel", "phone", unique=True,
            sqlite_where=text("closed_at IS NULL"), postgresql_where=text("closed_at IS NULL"),
        ),
        Index(
            "ix_sessions_open_expiry", "expires_at",
            sqlite_where=text("closed_at IS NULL"), postgresql_where=text("closed_at IS NULL"),
        ),
        Index("ix_sessions_phone", "phone"),
    )


class Message(Base):
    """Every message in and out. Outbound rows are the outbox."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"))
    channel: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(3))
    twilio_sid: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    # What replaces `body` once sent, for bodies that carry a password (rows written
    # before 0007; since then `body` is the redacted copy from the start).
    body_redacted: Mapped[str | None] = mapped_column(Text)
    # The clear body of a message that carries a password, encrypted (persistence.sealing),
    # until it is delivered or given up.
    body_sealed: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    # When the dispatcher may try again (retries back off).
    next_attempt_at: Mapped[datetime | None]
    # The worker sending this row, and until when its claim holds (then another may).
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claim_until: Mapped[datetime | None]
    # Outbound: the flow's text key the body came from, and the choices it offers
    # (JSON: [{"id", "title"}]), which the channel shows as buttons or numbered lines.
    text_key: Mapped[str | None] = mapped_column(String(64))
    choices: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("uq_messages_twilio_sid", "twilio_sid", unique=True),
        Index("ix_messages_session", "session_id"),
        Index(
            "ix_messages_outbox", "channel", "id",
            sqlite_where=text("status IN ('pending', 'sending')"),
            postgresql_where=text("status IN ('pending', 'sending')"),
        ),
    )


class SessionEvent(Base):
    """Append-only audit of every transition."""

    __tablename__ = "session_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"))
    at: Mapped[datetime]
    from_state: Mapped[str | None] = mapped_column(String(64))
    to_state: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_session_events_session", "session_id"),)


class Trial(Base):
    """One row per trial issued. The password is never stored."""

    __tablename__ = "trials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    phone: Mapped[str] = mapped_column(String(32))
    username: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"), unique=True)

    __table_args__ = (Index("ix_trials_phone", "phone", "issued_at"),)


class Lease(Base):
    """Who holds a role among the workers ('scheduler'), until when, and its fencing
    token: it grows at every change of holder, and every effect checks it."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128))
    token: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime | None]


class Heartbeat(Base):
    """A write /healthz makes to prove the database takes one (engine/server/health.py)."""

    __tablename__ = "heartbeats"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[datetime]


class SendSlot(Base):
    """The next free send time (epoch seconds) of one Twilio sender, for all workers."""

    __tablename__ = "send_slots"

    sender: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_slot: Mapped[float] = mapped_column(Float)


class InboundRate(Base):
    """Messages one phone sent in its current rate window (RATE_LIMIT_MESSAGES per
    RATE_LIMIT_WINDOW_SECONDS), shared by every worker."""

    __tablename__ = "inbound_rates"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    phone: Mapped[str] = mapped_column(String(32), primary_key=True)
    window_start: Mapped[datetime]
    received: Mapped[int] = mapped_column(Integer)


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


# Core handles on the tables, for the statements on the per-message path.
sessions = _table(Session)
messages = _table(Message)
session_events = _table(SessionEvent)
trials = _table(Trial)
leases = _table(Lease)
heartbeats = _table(Heartbeat)
send_slots = _table(SendSlot)
inbound_rates = _table(InboundRate)
