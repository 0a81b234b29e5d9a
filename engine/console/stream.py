"""Server-sent events for the simulator: the phone's messages, events and session, live.

A stream reads the phone's feed when a commit touched that phone (the Hub hears every
commit of this process) and at least once a second, for what other processes wrote
(a `tertulia sessions close`, a timeout run by another holder of the scheduler lock).
Each event carries the feed's cursor as its id, so a browser that reconnects sends
Last-Event-ID and misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool

from engine.channels.web import CHANNEL, WebPhone
from engine.core.choices import numbered
from engine.core.ports import SessionRecord
from engine.core.unit import Committed
from persistence.feed import Cursor, Feed

__all__ = ["Hub", "events"]

log = logging.getLogger("tertulia.console")

POLL_SECONDS = 1.0
PING_SECONDS = 15.0  # a comment line now and then finds browsers that went away


class _Waiter:
    def __init__(self, phone: str) -> None:
        self.phone = phone
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
            self.loop.call_soon_threadsafe(self.event.set)


class Hub:
    """Wakes the streams of the phones a commit touched (a Conversations listener)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[_Waiter] = set()
        self.closing = False

    def on_commit(self, committed: Committed) -> None:
        phones = {o.phone for o in committed.outbound if o.channel == CHANNEL}
        for group in (committed.opened, committed.renewed, committed.closed):
            phones.update(s.phone for s in group if s.channel == CHANNEL)
        if phones:
            self._wake(lambda waiter: waiter.phone in phones)

    def close(self) -> None:
        """End every stream (the server is stopping): browsers reconnect elsewhere later."""
        self.closing = True
        self._wake(lambda _waiter: True)

    def _wake(self, which: Any) -> None:
        with self._lock:
            chosen = [w for w in self._waiters if which(w)]
        for waiter in chosen:
            waiter.wake()

    @contextlib.contextmanager
    def waiting(self, phone: str) -> Iterator[asyncio.Event]:
        waiter = _Waiter(phone)
        with self._lock:
            self._waiters.add(waiter)
        try:
            yield waiter.event
        finally:
            with self._lock:
                self._waiters.discard(waiter)


async def events(hub: Hub, phone: WebPhone, cursor: Cursor | None) -> AsyncIterator[str]:
    """The SSE body: one `feed` event per read that found something new."""
    yield "retry: 1000\n\n"
    if cursor is None:
        cursor = await run_in_threadpool(phone.start)
    shown: tuple[object, ...] | None = None
    pinged = time.monotonic()
    with hub.waiting(phone.phone) as wake:
        while not hub.closing:
            wake.clear()
            feed = await _take(phone, cursor)
            if feed is not None:
                cursor = feed.cursor
                session = _session_key(feed.session)
                if feed.messages or feed.events or session != shown:
                    shown = session
                    pinged = time.monotonic()
                    yield _event(feed, phone.clock.now())
            if time.monotonic() - pinged > PING_SECONDS:
                pinged = time.monotonic()
                yield ": ping\n\n"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), POLL_SECONDS)


async def _take(phone: WebPhone, cursor: Cursor) -> Feed | None:
    try:
        return await run_in_threadpool(phone.take, cursor)
    except Exception as exc:  # a locked or briefly unreachable database: try again soon
        log.warning("console: reading the simulator feed failed (%s: %s); retrying",
                    type(exc).__name__, exc)
        return None


def _session_key(session: SessionRecord | None) -> tuple[object, ...] | None:
    if session is None:
        return None
    return (session.id, session.state, session.expires_at, session.closed_at)


def _event(feed: Feed, now: datetime) -> str:
    payload = {
        "now": _ms(now),
        "messages": [{"id": m.id, "session": m.session_id, "dir": m.direction,
                      # The simulated phone shows choices as numbered lines and
                      # takes their number, as WhatsApp's plain-text fallback does.
                      "body": numbered(m.body, m.choices), "at": m.at.isoformat()}
                     for m in feed.messages],
        "events": [{"id": e.id, "session": e.session_id, "at": e.at.isoformat(),
                    "from": e.from_state, "to": e.to_state, "trigger": e.trigger,
                    "detail": e.detail} for e in feed.events],
        "session": session_json(feed.session),
    }
    data = json.dumps(payload, ensure_ascii=False)
    return f"id: {feed.cursor}\nevent: feed\ndata: {data}\n\n"


def session_json(session: SessionRecord | None) -> dict[str, Any] | None:
    if session is None:
        return None
    return {"id": session.id, "flow": session.flow, "state": session.state,
            "open": session.is_open, "reason": session.close_reason,
            "expires": _ms(session.expires_at)}


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
