"""The unit of work of one transaction: it moves sessions, queues texts and remembers
what changed, so the engine can tell adapters after the commit."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from engine.core.choices import Choice
from engine.core.errors import StoreError
from engine.core.flow import CompiledFlow, Route
from engine.core.ports import Outbound, SessionRecord, StoreTx
from engine.core.text import MAX_BODY, MAX_PARTS, split_body

__all__ = ["Committed", "OutputLimits", "Work"]

log = logging.getLogger("tertulia.conversations")
_HIDDEN = "••••••••"


@dataclass(frozen=True, slots=True)
class OutputLimits:
    """Caps on what one transaction sends a session, so no input is billed many times."""

    # Messages queued for one session in one transaction (MAX_OUTBOUND_PER_TURN).
    per_turn: int = 8
    # Parts one long text is split into (MAX_BODY_PARTS).
    parts: int = MAX_PARTS


@dataclass
class Committed:
    """What one committed transaction changed."""

    opened: list[SessionRecord] = field(default_factory=list)
    renewed: list[SessionRecord] = field(default_factory=list)
    warned: list[SessionRecord] = field(default_factory=list)
    closed: list[SessionRecord] = field(default_factory=list)
    outbound: list[Outbound] = field(default_factory=list)
    # Sessions a timeout acted on; a closed one's job APScheduler has already removed.
    fired: list[int] = field(default_factory=list)
    # Open sessions whose expiry a state's own timeout set: their job moves with it.
    rescheduled: list[SessionRecord] = field(default_factory=list)


class Work:
    """Writes of one transaction, applied through the store as they happen."""

    def __init__(
        self, tx: StoreTx, now: datetime, *, secret: str | None = None,
        limits: OutputLimits | None = None,
    ) -> None:
        self.tx, self.now, self._secret = tx, now, secret
        self._limits = limits or OutputLimits()
        self._queued: dict[int, int] = {}
        self.committed = Committed()
        self.issue: tuple[SessionRecord, CompiledFlow] | None = None
        # The message's session was closed because its flow changed: it starts afresh.
        self.restarted = False
        self._read_versions: dict[int, tuple[SessionRecord, int]] = {}

    def touch(self, session: SessionRecord) -> None:
        """Remember the version read, so the write can check nobody else wrote since."""
        self._read_versions.setdefault(session.id, (session, session.version))

    def opened(self, session: SessionRecord, flow: CompiledFlow) -> None:
        self.touch(session)
        self.committed.opened.append(session)
        self.tx.add_event(session_id=session.id, from_state=None, to_state=session.state,
                          trigger="start", detail=f"flow {flow.name}", at=self.now)

    def renew(self, session: SessionRecord, timeout: timedelta, *, created: bool) -> None:
        self.touch(session)
        session.last_inbound_at = self.now
        session.expires_at = self.now + timeout
        session.warned = False
        if not created:
            self.committed.renewed.append(session)

    def say(
        self, session: SessionRecord, flow: CompiledFlow, key: str,
        values: Mapping[str, object] | None = None,
    ) -> None:
        offered = flow.choices.get(key, ())
        if offered:
            session.choices = offered
        self.send(session, flow.render(key, values or {}), key=key, choices=offered)

    def send(
        self, session: SessionRecord, text: str, *, key: str | None = None,
        choices: tuple[Choice, ...] = (),
    ) -> None:
        """Queue a text already rendered, split to WhatsApp's size (MAX_BODY_PARTS at
        most), within the turn's cap on messages (MAX_OUTBOUND_PER_TURN)."""
        parts = split_body(text, MAX_BODY, self._limits.parts)
        for index, body in enumerate(parts):
            queued = self._queued.get(session.id, 0)
            if queued >= self._limits.per_turn:
                log.warning("session %s: text %r not sent: MAX_OUTBOUND_PER_TURN (%d) "
                            "reached in this turn", session.id, key, self._limits.per_turn)
                return
            self._queued[session.id] = queued + 1
            secret = self._secret
            redacted = body.replace(secret, _HIDDEN) if secret and secret in body else None
            # A long text's choices go with its last part, where the question is.
            offered = choices if index == len(parts) - 1 else ()
            message_id = self.tx.enqueue(session_id=session.id, channel=session.channel,
                                         body=body, now=self.now, redacted=redacted, key=key,
                                         choices=offered)
            self.committed.outbound.append(Outbound(
                message_id, session.id, session.channel, session.phone, body, offered, key))

    def said_to(self, session: SessionRecord) -> str:
        return "\n".join(o.body for o in self.committed.outbound if o.session_id == session.id)

    def transition(
        self, session: SessionRecord, flow: CompiledFlow, trigger: str, *,
        values: Mapping[str, object] | None = None, notify: bool = True,
        detail: str | None = None,
    ) -> Route:
        """Fire `trigger` through the flow's Machine, record the event, say its texts."""
        self.touch(session)
        route = flow.fire(session.state, trigger)
        self.tx.add_event(session_id=session.id, from_state=session.state, to_state=route.dest,
                          trigger=trigger, detail=detail, at=self.now)
        session.state = route.dest
        session.choices = ()  # what was offered answered the state just left
        if notify:
            for key in route.say:
                self.say(session, flow, key, {**session.context, **(values or {})})
        if route.reason is not None:
            session.closed_at, session.close_reason = self.now, route.reason
            self.committed.closed.append(session)
        return route

    def close_directly(
        self, session: SessionRecord, *, reason: str, trigger: str, text: str | None,
        detail: str | None = None,
    ) -> None:
        """Close without the flow's Machine: its state, or the whole flow, is gone.

        Every flow has a "closed" final state, so the row ends up where a regular close
        would have left it."""
        self.touch(session)
        self.tx.add_event(session_id=session.id, from_state=session.state, to_state="closed",
                          trigger=trigger, detail=detail, at=self.now)
        session.state = "closed"
        session.closed_at = self.now
        session.close_reason = reason
        if text is not None:
            self.send(session, text)
        self.committed.closed.append(session)

    def flush(self) -> None:
        """Write back every session touched; a changed version means a lost race."""
        touched, self._read_versions = self._read_versions, {}
        for session, read_version in touched.values():
            if not self.tx.save_session(session, read_version=read_version):
                raise StoreError(
                    f"session {session.id} changed under us (read version {read_version})"
                )
