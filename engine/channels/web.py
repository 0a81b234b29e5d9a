"""The web console's simulated phone: channel `web`, against the real engine and store.

What the browser types becomes an Inbound like a webhook's. Replies and notices are
outbox rows on channel `web` that no dispatcher sends: the phone takes them when it
reads its feed, and records them delivered, as a phone would (the console channel
does the same for the terminal).
"""

from __future__ import annotations

import uuid

from engine.core.clock import Clock
from engine.core.ports import Inbound
from persistence import outbox
from persistence.feed import Cursor, Feed, read_feed, start_cursor
from persistence.store import SqlStore, TxRunner

__all__ = ["CHANNEL", "WebPhone", "inbound"]

CHANNEL = "web"


def inbound(phone: str, text: str, *, flow: str | None = None,
            profile_name: str | None = None) -> Inbound:
    """A message typed in the simulator; its id makes a repeated submit harmless."""
    return Inbound(channel=CHANNEL, phone=phone, text=text, message_id=f"web:{uuid.uuid4().hex}",
                   profile_name=profile_name, flow=flow)


class WebPhone:
    """One simulated phone: what it has received so far, and what it receives next."""

    def __init__(self, store: SqlStore, write: TxRunner, clock: Clock, phone: str) -> None:
        self._store = store
        self._write = write
        self.clock = clock
        self.phone = phone

    def start(self) -> Cursor:
        """Where a fresh page starts: the phone's latest session, from its first row."""
        return start_cursor(self._store, CHANNEL, self.phone)

    def take(self, cursor: Cursor) -> Feed:
        """Rows after `cursor`; pending replies among them are delivered now."""
        feed = read_feed(self._store, CHANNEL, self.phone, cursor)
        pending = feed.undelivered
        if pending:
            now = self.clock.now()
            self._write(lambda tx: outbox.mark_delivered(tx, pending, now))
        return feed
