"""The engine: one inbound message in, the outbound messages out, in one transaction.

It imports no twilio, web framework or sqlalchemy. It talks to a Store (serialised
transactions), a CredentialProvider and a Clock, and tells listeners what each
committed transaction changed so adapters (timeouts, the outbox, logs) act after it.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from engine.core.choices import pick
from engine.core.clock import Clock
from engine.core.errors import LeaseLost, SessionBusy, StoreError
from engine.core.flow import CompiledFlow, Decision, Turn
from engine.core.intents import IntentDetector
from engine.core.pinning import close_anyway, current_flow
from engine.core.ports import (
    CredentialProvider,
    CredentialRequest,
    Credentials,
    Fence,
    Inbound,
    Outbound,
    SessionRecord,
    Store,
    StoreTx,
    TrialRecord,
)
from engine.core.registry import FlowRegistry
from engine.core.unit import Committed, OutputLimits, Work

__all__ = ["WHATSAPP_WINDOW", "ConversationSettings", "Conversations", "Listener"]

log = logging.getLogger("tertulia.conversations")

Listener = Callable[[Committed], None]
Deferrer = Callable[[Callable[[], object]], object]
# WhatsApp only delivers free-form messages within 24 h of the user's last message.
WHATSAPP_WINDOW = timedelta(hours=24)
_MISSES_BEFORE_OPTIONS = 3
# When another worker holds a due conversation, its timeout looks again this soon.
_BUSY_RETRY = timedelta(seconds=1)


@dataclass(frozen=True)
class ConversationSettings:
    session_timeout: timedelta = timedelta(minutes=3)
    session_warning: timedelta | None = None
    trial_cooldown: timedelta = timedelta(days=30)
    # Abuse limits (README, "Limits"): messages a phone may send per window before it
    # gets one "slow down" and no answers until the window ends...
    rate_limit: int = 30
    rate_window: timedelta = timedelta(minutes=1)
    # ...the length of what a flow reads from the user (and may store and echo)...
    max_input_chars: int = 1000
    # ...and what one turn may send.
    output: OutputLimits = field(default_factory=OutputLimits)


class _Duplicate(Exception):
    """The MessageSid was seen before: roll back and answer nothing."""


class Conversations:
    """Runs conversations; holds no conversation in memory between messages."""

    def __init__(
        self, *, flows: FlowRegistry, store: Store, provider: CredentialProvider, clock: Clock,
        settings: ConversationSettings | None = None, listeners: Sequence[Listener] = (),
        detector: IntentDetector | None = None,
    ) -> None:
        self.flows, self._store, self._provider, self.clock = flows, store, provider, clock
        self.settings = settings or ConversationSettings()
        self._listeners = list(listeners)
        # None: each flow's built-in rules, with the flow's own vocabulary.
        self._detector = detector
        # Sessions whose issue is queued or runs in this process: a resume (a message, a
        # timeout, a restart) while one is under way leaves it to deliver.
        self._issuing: set[int] = set()
        self._issuing_lock = threading.Lock()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- inbound -------------------------------------------------------------------------

    def handle(self, inbound: Inbound) -> list[Outbound]:
        """Process one message; the returned messages are already queued in the outbox."""
        return self.handle_many([inbound])[0]

    def handle_many(
        self, inbounds: Sequence[Inbound], *, later: Deferrer | None = None
    ) -> list[list[Outbound]]:
        """Process messages in one transaction (group commit), each inside its own savepoint.

        A failing step rolls back only its own message; a StoreError fails them all.
        Credentials are issued after the commit: inline, or handed to `later` so a slow
        provider does not hold up the messages behind it.
        """
        with self._store.transaction() as tx:
            works = self.run_batch(tx, inbounds)
        return self.finish(works, later=later)

    def run_batch(self, tx: StoreTx, inbounds: Sequence[Inbound]) -> list[Work]:
        """The writes of several messages inside a transaction someone else commits."""
        now = self.clock.now()
        # Every conversation of the batch at once, before any other lock: see StoreTx.
        tx.lock_conversations((inbound.channel, inbound.phone) for inbound in inbounds)
        return [self._one(tx, inbound, now) for inbound in inbounds]

    def finish(self, works: Sequence[Work], *, later: Deferrer | None = None
               ) -> list[list[Outbound]]:
        """After the commit: tell the listeners, issue credentials, return the replies."""
        results = []
        for work in works:
            self._publish(work.committed)
            outbound = work.committed.outbound
            if work.issue is not None:
                outbound = outbound + self._issue_or_defer(*work.issue, later)
            results.append(outbound)
        return results

    def _work(self, tx: StoreTx, now: datetime, *, secret: str | None = None) -> Work:
        return Work(tx, now, secret=secret, limits=self.settings.output)

    def _one(self, tx: StoreTx, inbound: Inbound, now: datetime) -> Work:
        work = self._work(tx, now)
        try:
            with tx.savepoint():
                session, flow, created = self._session_for(work, inbound)
                if not tx.record_inbound(
                    session_id=session.id, channel=inbound.channel,
                    message_id=inbound.message_id, body=inbound.text, now=now,
                ):
                    raise _Duplicate
                if self._within_rate(work, session, flow, inbound, created):
                    self._respond(work, session, flow, inbound, created)
                work.flush()
        except _Duplicate:
            return self._work(tx, now)
        except StoreError:
            raise
        except Exception as exc:
            return self._fail(tx, inbound, now, exc)
        return work

    def _within_rate(
        self, work: Work, session: SessionRecord, flow: CompiledFlow, inbound: Inbound,
        created: bool,
    ) -> bool:
        """Whether the phone is within its rate; past it, the message stays stored, the
        first one over gets the "slow down" text and the rest get nothing."""
        settings = self.settings
        count = work.tx.count_inbound(channel=inbound.channel, phone=inbound.phone,
                                      now=work.now, window=settings.rate_window)
        if count <= settings.rate_limit:
            return True
        work.renew(session, settings.session_timeout, created=created)
        if count == settings.rate_limit + 1:
            log.warning("rate limit: %s sent more than %d messages within %s; told to slow "
                        "down, not answered until the window ends", inbound.phone,
                        settings.rate_limit, settings.rate_window)
            work.say(session, flow, "slow_down")
        return False

    def _session_for(
        self, work: Work, inbound: Inbound
    ) -> tuple[SessionRecord, CompiledFlow, bool]:
        session = work.tx.open_session(inbound.channel, inbound.phone)
        flow = None if session is None else current_flow(work, session, self.flows)
        if session is not None and flow is not None and session.expires_at <= work.now:
            # The row is the truth: past expires_at it is over, whether or not its job ran.
            self._time_out(work, session, flow, notify=True,
                           detail="expired before this message arrived")
        if session is not None and flow is not None and session.is_open:
            return session, flow, False
        # The message answered a question its changed or removed flow no longer asks:
        # the new session greets, and the step does not read it.
        work.restarted = session is not None and flow is None
        work.flush()  # the unique index on open sessions wants a closed one saved first
        flow = self._new_flow(inbound)
        session = work.tx.create_session(
            channel=inbound.channel, phone=inbound.phone, flow=flow.name, state=flow.initial,
            now=work.now, expires_at=work.now + self._timeout(flow, flow.initial), context={},
            flow_version=flow.version,
        )
        work.opened(session, flow)
        return session, flow, True

    def _new_flow(self, inbound: Inbound) -> CompiledFlow:
        if inbound.flow is None:
            return self.flows.default
        flow = self.flows.flows.get(inbound.flow)
        if flow is None:
            log.warning("a message asked for flow %r, which no file defines; it starts in %r",
                        inbound.flow, self.flows.default_name)
            return self.flows.default
        return flow

    def _timeout(self, flow: CompiledFlow, state: str) -> timedelta:
        return flow.timeout_after(state, self.settings.session_timeout)

    def _time_out(
        self, work: Work, session: SessionRecord, flow: CompiledFlow, *, notify: bool,
        detail: str | None = None,
    ) -> None:
        """Fire the state's timeout: the engine's close, or the flow's own transition,
        which may keep the session open in another state with its own expiry."""
        trigger = flow.timeout_trigger(session.state)
        if trigger == "expire":
            work.transition(session, flow, trigger, notify=notify, detail=detail)
            return
        work.transition(session, flow, trigger, values=session.context, notify=notify,
                        detail=detail or "the state's own timeout")
        if session.is_open:
            session.expires_at = work.now + self._timeout(flow, session.state)
            session.warned = False
            work.committed.rescheduled.append(session)

    def _respond(
        self, work: Work, session: SessionRecord, flow: CompiledFlow, inbound: Inbound,
        created: bool,
    ) -> None:
        work.renew(session, self._timeout(flow, session.state), created=created)
        self._answer(work, session, flow, inbound, created)
        if session.is_open and flow.timeouts:
            # The step may have moved the session: the new state's timeout decides, and
            # the job follows it even when that comes sooner than the one armed.
            session.expires_at = work.now + self._timeout(flow, session.state)
            work.committed.rescheduled.append(session)

    def _answer(
        self, work: Work, session: SessionRecord, flow: CompiledFlow, inbound: Inbound,
        created: bool,
    ) -> None:
        turn = self._turn(work, session, inbound, flow)
        if created:
            self._apply(work, session, flow, flow.instance.start(turn))
        if inbound.kind != "text":
            work.say(session, flow, "media_only")
        elif turn.intent == "cancelacion":
            work.transition(session, flow, "cancel")
        elif turn.intent == "despedida":
            work.transition(session, flow, "goodbye")
        elif created and (turn.intent in (None, "saludo") or work.restarted):
            pass  # the greeting already answers a hello
        elif session.state == flow.credentials_state:
            work.issue = (session, flow)  # resume an issue a crash interrupted
        else:
            self._apply(work, session, flow, flow.run_step(turn))

    def _turn(
        self, work: Work, session: SessionRecord, inbound: Inbound, flow: CompiledFlow
    ) -> Turn:
        expects = flow.instance.expects(session.state, session.context)
        detector = self._detector or flow.intents
        # What the user wrote, capped: a flow stores and echoes it (MAX_INPUT_CHARS).
        cap = self.settings.max_input_chars
        written = inbound.text[:cap]
        name = inbound.profile_name[:cap] if inbound.profile_name else None
        # A tap, a number or the words of an offered choice read as that choice's title.
        picked = pick(session.choices, text=written, choice_id=inbound.choice)
        text = picked.title if picked is not None else written
        intent = detector.detect(text, expects=expects)
        if intent is None and picked is None and inbound.choice:
            # A template's own button id ("si") may say what its words ("Opción 1") do not.
            intent = detector.detect(inbound.choice[:cap], expects=expects)
        return Turn(
            text=text, intent=intent, state=session.state,
            context=session.context, now=work.now, profile_name=name,
            trials=lambda: work.tx.latest_trial(session.phone),
            trial_cooldown=self.settings.trial_cooldown,
            choice=picked.id if picked is not None else None,
        )

    def _apply(
        self, work: Work, session: SessionRecord, flow: CompiledFlow, decision: Decision
    ) -> None:
        if not decision.understood:
            self._miss(work, session, flow)
            return
        session.misses = 0
        self._cap_context(session)
        values = {**session.context, **self._capped(decision.values)}
        for key in decision.say:
            work.say(session, flow, key, values)
        if decision.trigger is not None:
            route = work.transition(session, flow, decision.trigger, values=values)
            if route.dest == flow.credentials_state:
                work.issue = (session, flow)
        self._closing_keywords(work, session, flow)

    def _capped(self, values: Mapping[str, object]) -> dict[str, object]:
        cap = self.settings.max_input_chars
        return {k: v[:cap] if isinstance(v, str) else v for k, v in values.items()}

    def _cap_context(self, session: SessionRecord) -> None:
        """Whatever a step stored, no string in the context outgrows MAX_INPUT_CHARS."""
        cap = self.settings.max_input_chars
        for key, value in session.context.items():
            if isinstance(value, str) and len(value) > cap:
                session.context[key] = value[:cap]

    def _miss(self, work: Work, session: SessionRecord, flow: CompiledFlow) -> None:
        session.misses += 1
        if session.misses >= _MISSES_BEFORE_OPTIONS:
            work.say(session, flow, "options")
            session.misses = 0
        else:
            work.say(session, flow, flow.cls.reprompts.get(session.state, "not_understood"),
                     session.context)

    def _closing_keywords(self, work: Work, session: SessionRecord, flow: CompiledFlow) -> None:
        if not flow.closing_keywords or not session.is_open:
            return
        said = work.said_to(session).casefold()
        if any(keyword in said for keyword in flow.closing_keywords):
            work.transition(session, flow, "keyword_close", detail="closing keyword in reply")

    # -- credentials, outside the write lock ---------------------------------------------

    def resume(self, sessions: Sequence[SessionRecord], *, later: Deferrer | None = None
               ) -> list[Outbound]:
        """Issue again for sessions left in their flow's credentials state (a restart
        after a crash mid-issue): the provider is keyed by session, so it is idempotent."""
        outbound: list[Outbound] = []
        for session in sessions:
            outbound += self._issue_or_defer(session, self.flows.get(session.flow), later)
        return outbound

    def _issue_or_defer(self, session: SessionRecord, flow: CompiledFlow,
                        later: Deferrer | None) -> list[Outbound]:
        with self._issuing_lock:
            if session.id in self._issuing:
                return []  # queued or under way here: it delivers
            self._issuing.add(session.id)
        task = functools.partial(self._issue, session, flow)
        if later is None:
            return task()
        try:
            later(task)
        except BaseException:
            self._issued(session.id)
            raise
        return []

    def _issue(self, session: SessionRecord, flow: CompiledFlow) -> list[Outbound]:
        try:
            return self._issue_once(session, flow)
        finally:
            self._issued(session.id)

    def _issued(self, session_id: int) -> None:
        with self._issuing_lock:
            self._issuing.discard(session_id)

    def _issue_once(self, session: SessionRecord, flow: CompiledFlow) -> list[Outbound]:
        try:
            request = CredentialRequest(
                key=str(session.id), phone=session.phone, now=self.clock.now(),
                details=dict(flow.instance.credential_details(session.context)),
            )
            credentials = self._provider.issue(request)
            return self._deliver(session.id, flow, credentials)
        except StoreError:
            raise
        except Exception as exc:
            return self._fail_session(session.id, exc)

    def _deliver(self, session_id: int, flow: CompiledFlow, creds: Credentials) -> list[Outbound]:
        now = self.clock.now()
        with self._store.transaction() as tx:
            work = self._work(tx, now, secret=creds.password)
            session = tx.get_session(session_id)
            if session is None or not session.is_open or session.state != flow.credentials_state:
                return []  # another message delivered them already
            work.touch(session)
            tx.add_trial(TrialRecord(session.phone, creds.username, now, creds.expires_at),
                         session_id=session_id)
            turn = Turn(text="", intent=None, state=session.state, context=session.context,
                        now=now, credentials=creds)
            self._apply(work, session, flow, flow.run_step(turn))
            work.flush()
        self._publish(work.committed)
        return work.committed.outbound

    # -- failures ------------------------------------------------------------------------

    def _fail(self, tx: StoreTx, inbound: Inbound, now: datetime, exc: Exception) -> Work:
        """After the message's savepoint rolled back: record it, apologise, close (error)."""
        log.error("step failed for session of %s: %s: %s", inbound.phone, type(exc).__name__,
                  exc, exc_info=exc)
        work = self._work(tx, now)
        try:
            with tx.savepoint():
                session, _, _ = self._session_for(work, inbound)
                if not tx.record_inbound(session_id=session.id, channel=inbound.channel,
                                         message_id=inbound.message_id, body=inbound.text,
                                         now=now):
                    return self._work(tx, now)
                work.renew(session, self.settings.session_timeout, created=True)
                close_anyway(work, session, self.flows, "fail", detail=_describe(exc))
                work.flush()
        except StoreError:
            raise
        except Exception:
            # Even the apology failed: this message goes unanswered, but the others of
            # its group-commit batch must still commit.
            log.exception("could not close the session of %s after its step failed",
                          inbound.phone)
            return self._work(tx, now)
        return work

    def _fail_session(self, session_id: int, exc: Exception) -> list[Outbound]:
        log.error("credentials failed for session %s: %s", session_id, _describe(exc),
                  exc_info=exc)
        return self._close_by_id(session_id, "fail", detail=_describe(exc))

    # -- closes the scheduler and ops ask for --------------------------------------------

    def expire(self, session_id: int, *, fence: Fence | None = None) -> datetime | None:
        """Time out a session if it is due; returns the later expiry to re-arm at, if any."""
        with self._store.transaction() as tx:
            work, later = self.expire_in(tx, session_id, fence=fence)
        self.finish([work])  # publishes, and resumes a pending issue inline
        return later

    def expire_in(
        self, tx: StoreTx, session_id: int, *, fence: Fence | None = None
    ) -> tuple[Work, datetime | None]:
        """The writes of one timeout inside a transaction someone else commits.

        The guard is the row: open and `expires_at <= now`, read under the write lock,
        and the save checks the version read, so a stale job never closes a session a
        message just renewed. Returns the later expiry when the session was renewed, or
        a moment from now when another worker holds the conversation. With a `fence`,
        nothing happens unless that lease is still held (LeaseLost).
        """
        now = self.clock.now()
        work = self._work(tx, now)
        _check(tx, fence)
        try:
            session = tx.get_session(session_id, wait=False)
        except SessionBusy:
            return work, now + _BUSY_RETRY
        if session is None:
            return work, None
        return self.expire_locked(tx, session, now=now)

    def expire_locked(
        self, tx: StoreTx, session: SessionRecord, *, now: datetime | None = None
    ) -> tuple[Work, datetime | None]:
        """`expire_in` for a session whose row the caller read and locked in `tx` (the
        overdue scan reads many in one statement)."""
        now = now or self.clock.now()
        work = self._work(tx, now)
        if not session.is_open:
            return work, None
        if session.expires_at > now:
            return work, session.expires_at
        in_window = now - session.last_inbound_at < WHATSAPP_WINDOW
        detail = None if in_window else "outside the 24-hour window: closed without a notice"
        flow = current_flow(work, session, self.flows, notify=in_window)
        if flow is not None:
            if in_window and session.state == flow.credentials_state:
                return work, self._resume_instead_of_expiring(work, session, flow)
            self._time_out(work, session, flow, notify=in_window, detail=detail)
        work.flush()
        work.committed.fired.append(session.id)
        return work, session.expires_at if session.is_open else None

    def _resume_instead_of_expiring(self, work: Work, session: SessionRecord,
                                    flow: CompiledFlow) -> datetime:
        """The user is waiting for credentials, not idle: an issue that outlived the
        timeout (a slow provider) goes on, one a crash cut short is asked again, and the
        timeout comes back later. Closing here would leave an account issued and never
        delivered. The 24-hour window bounds it: past it nothing could be delivered."""
        work.touch(session)
        session.expires_at = work.now + self.settings.session_timeout
        work.issue = (session, flow)
        work.flush()
        return session.expires_at

    def warn(self, session_id: int, *, fence: Fence | None = None) -> bool:
        """Send the "¿Seguís ahí?" notice once per idle stretch; True if it was sent."""
        warning, now = self.settings.session_warning, self.clock.now()
        with self._store.transaction() as tx:
            _check(tx, fence)
            session = tx.get_session(session_id)
            if (warning is None or session is None or not session.is_open
                    or session.warned
                    or session.state == self.flows.get(session.flow).credentials_state
                    or not session.expires_at - warning <= now < session.expires_at
                    or now - session.last_inbound_at >= WHATSAPP_WINDOW):
                return False
            flow = self.flows.flows.get(session.flow)
            if (flow is None or session.state not in flow.open_states()
                    or session.state in flow.timeouts):
                # Gone or changed: its timeout closes it. A state's own timeout says its
                # own thing: "we are about to close" would be untrue there.
                return False
            work = self._work(tx, now)
            work.touch(session)
            session.warned = True
            work.say(session, flow, "warning")
            work.committed.warned.append(session)
            work.flush()
        self._publish(work.committed)
        return True

    def close(self, session_id: int, *, notify: bool = True) -> list[Outbound]:
        """Close an open session for ops (reason admin)."""
        return self._close_by_id(session_id, "admin_close", notify=notify, detail="by ops")

    def _close_by_id(
        self, session_id: int, trigger: str, *, notify: bool = True, detail: str | None = None
    ) -> list[Outbound]:
        with self._store.transaction() as tx:
            work = self._work(tx, self.clock.now())
            session = tx.get_session(session_id)
            if session is None or not session.is_open:
                return []
            close_anyway(work, session, self.flows, trigger, notify=notify, detail=detail)
            work.flush()
        self._publish(work.committed)
        return work.committed.outbound

    def _publish(self, committed: Committed) -> None:
        for listener in self._listeners:
            try:
                listener(committed)
            except Exception:
                # The transaction is committed; a listener must not undo the user's reply.
                log.exception("listener %r failed", listener)


def _check(tx: StoreTx, fence: Fence | None) -> None:
    if fence is not None and not tx.holds(fence):
        raise LeaseLost(fence.name, fence.token)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
