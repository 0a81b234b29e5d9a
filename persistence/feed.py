"""What one simulated phone sees: its messages, its sessions' events and its session.

The web console streams these to a browser. A cursor (the oldest session shown, the
last message and event sent) makes every row go out once, and lets a reconnecting
browser say where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from engine.core import choices as offers
from engine.core.choices import Choice
from engine.core.ports import SessionRecord
from persistence.models import messages, session_events, sessions
from persistence.queries import latest_session
from persistence.store import SqlStore

__all__ = ["Cursor", "Feed", "FeedEvent", "FeedMessage", "read_feed", "start_cursor"]

_LIMIT = 200  # rows per read; a longer backlog comes on the next read


@dataclass(frozen=True, slots=True)
class Cursor:
    session: int  # sessions before this id are not shown
    message: int  # the last message id sent
    event: int  # the last event id sent

    def __str__(self) -> str:
        return f"{self.session}.{self.message}.{self.event}"

    @classmethod
    def parse(cls, text: str) -> Cursor | None:
        """The cursor an event id carries, or None when `text` is not one."""
        parts = text.strip().split(".")
        if len(parts) != 3 or not all(p.isdigit() and len(p) <= 18 for p in parts):
            return None
        return cls(int(parts[0]), int(parts[1]), int(parts[2]))


@dataclass(frozen=True, slots=True)
class FeedMessage:
    id: int
    session_id: int
    direction: str  # in | out
    body: str
    status: str
    at: datetime
    choices: tuple[Choice, ...] = ()


@dataclass(frozen=True, slots=True)
class FeedEvent:
    id: int
    session_id: int
    at: datetime
    from_state: str | None
    to_state: str
    trigger: str
    detail: str | None


@dataclass(frozen=True)
class Feed:
    messages: list[FeedMessage]
    events: list[FeedEvent]
    session: SessionRecord | None
    cursor: Cursor  # where the next read starts

    @property
    def undelivered(self) -> list[int]:
        """Outbound rows read while still pending: the phone has them now."""
        return [m.id for m in self.messages if m.direction == "out" and m.status == "pending"]


def start_cursor(store: SqlStore, channel: str, phone: str) -> Cursor:
    """Show the phone's latest session from its first row."""
    latest = latest_session(store, channel, phone)
    return Cursor(latest.id if latest is not None else 0, 0, 0)


def read_feed(store: SqlStore, channel: str, phone: str, cursor: Cursor) -> Feed:
    """Rows after `cursor`, oldest first, and the phone's session as it is now."""
    m = messages.c
    e = session_events.c
    mine = select(sessions.c.id).where(sessions.c.channel == channel, sessions.c.phone == phone,
                                       sessions.c.id >= cursor.session)
    message_query = (
        select(m.id, m.session_id, m.direction, m.body, m.body_sealed, m.status, m.created_at,
               m.choices)
        .where(m.session_id.in_(mine), m.id > cursor.message).order_by(m.id).limit(_LIMIT)
    )
    event_query = (
        select(e.id, e.session_id, e.at, e.from_state, e.to_state, e.trigger, e.detail)
        .where(e.session_id.in_(mine), e.id > cursor.event).order_by(e.id).limit(_LIMIT)
    )
    with store.reading() as conn:
        # The simulated phone receives a sealed body in clear, as Twilio would.
        said = [FeedMessage(r.id, r.session_id, r.direction,
                            store.sealer.body(r.body, r.body_sealed), r.status, r.created_at,
                            offers.load(r.choices))
                for r in conn.execute(message_query)]
        events = [FeedEvent(r.id, r.session_id, r.at, r.from_state, r.to_state, r.trigger,
                            r.detail) for r in conn.execute(event_query)]
    session = latest_session(store, channel, phone)
    after = Cursor(cursor.session, said[-1].id if said else cursor.message,
                   events[-1].id if events else cursor.event)
    return Feed(said, events, session, after)

