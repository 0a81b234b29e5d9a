"""Run conversation tests: each case talks to the real engine on a fresh in-memory store,
with a clock that moves only when a `wait:` line says so.

Nothing is simulated but the user and the scheduler: the engine's own `expire` and
`warn` run when the clock reaches a session's warning or expiry, as the scheduler's
jobs would call them. A failure shows the conversation so far and the first difference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.core.choices import numbered
from engine.core.clock import FakeClock
from engine.core.conversations import Conversations, ConversationSettings
from engine.core.ports import Inbound, Outbound, SessionRecord
from engine.core.registry import FlowRegistry
from engine.core.unit import Committed
from engine.credentials.local import LocalCredentialProvider
from engine.flowtests.parse import Case, Line, Suite, duration
from persistence.memory import MemoryStore

__all__ = ["Result", "run_case", "run_suite"]

PHONE = "+5491100000000"
_STATE = re.compile(r"(\w+)\s*(?:\(\s*(\w+)\s*\))?")


@dataclass(frozen=True)
class Result:
    suite: Suite
    case: Case
    failure: str | None  # None: the case passed

    @property
    def name(self) -> str:
        return f"{self.suite.path.name}::{self.case.title}"


def run_suite(suite: Suite, flows: FlowRegistry) -> list[Result]:
    """Every case of one file, against `flows` (the suite's flow must be among them)."""
    return [run_case(suite, case, flows) for case in suite.cases]


def run_case(suite: Suite, case: Case, flows: FlowRegistry) -> Result:
    """One case, on a store and a clock of its own."""
    registry = FlowRegistry(flows.flows, suite.flow)
    registry.default  # noqa: B018 -- FlowNotFound names the flows there are
    return Result(suite, case, _Run(suite, registry).case(case))


class _Failed(Exception):
    """The first difference; the runner adds the conversation so far."""


class _Run:
    """One case: one user, a fresh store and a clock at rest."""

    def __init__(self, suite: Suite, flows: FlowRegistry) -> None:
        self.suite = suite
        self.clock = FakeClock()
        self.store = MemoryStore()
        self.engine = Conversations(
            flows=flows, store=self.store, clock=self.clock,
            provider=LocalCredentialProvider(),
            settings=ConversationSettings(session_timeout=suite.timeout,
                                          session_warning=suite.warning),
            listeners=[self._heard],
        )
        self.unread: list[Outbound] = []
        self.last: Outbound | None = None
        self.transcript: list[str] = []
        self.profile_name: str | None = None
        self.sent = 0

    def case(self, case: Case) -> str | None:
        line: Line | None = None
        try:
            for line in case.lines:
                self._do(line)
            self._nothing_unread(None)
        except _Failed as failure:
            return self._report(case, line, str(failure))
        return None

    def _report(self, case: Case, line: Line | None, difference: str) -> str:
        where = f"{self.suite.path}:{line.number if line else case.number}"
        said = "\n".join(f"    {entry}" for entry in self.transcript) or "    (nothing yet)"
        return (f"{where}: case {case.title!r}\n  the conversation so far:\n{said}\n"
                f"  first difference: {difference}")

    def _heard(self, committed: Committed) -> None:
        for message in committed.outbound:
            self.unread.append(message)
            self.transcript.append(f"< {_indented(numbered(message.body, message.choices))}")

    # -- the lines -----------------------------------------------------------------------

    def _do(self, line: Line) -> None:
        if line.kind in ("say", "tap", "wait"):
            self._nothing_unread(line)
        if line.kind == "say":
            self._send(line.value, None)
        elif line.kind == "tap":
            self._tap(line.value)
        elif line.kind == "expect":
            self._expect(line.value)
        elif line.kind == "choices":
            self._choices(line.value)
        elif line.kind == "state":
            self._state(line.value)
        elif line.kind == "wait":
            self._wait(line.value)
        else:
            self.profile_name = line.value or None

    def _send(self, text: str, choice: str | None) -> None:
        self.sent += 1
        self.transcript.append(f"> [{text}]" if choice else f"> {text}")
        self.engine.handle(Inbound(
            channel="whatsapp", phone=PHONE, text=text, message_id=f"test-{self.sent}",
            profile_name=self.profile_name, flow=self.suite.flow, choice=choice,
        ))

    def _tap(self, title: str) -> None:
        session = self._session()
        offered = session.choices if session is not None and session.is_open else ()
        for choice in offered:
            if choice.title == title:
                self._send(title, choice.id)
                return
        titles = " | ".join(c.title for c in offered) or "none"
        raise _Failed(f"no offered choice is titled {title!r}; offered: {titles}")

    def _expect(self, expected: str) -> None:
        if not self.unread:
            raise _Failed(f"expected the bot to say\n      {expected}\n"
                          "    but it said nothing more")
        message = self.unread.pop(0)
        self.last = message
        if not _matches(expected, message):
            raise _Failed(f"expected the bot to say\n      {expected}\n    but it said\n      "
                          + _indented(message.body))

    def _choices(self, expected: str) -> None:
        if self.last is None:
            raise _Failed("'choices:' comes before any bot message it could describe")
        titles = [c.title for c in self.last.choices]
        wanted = [t.strip() for t in expected.split("|") if t.strip()]
        if titles != wanted:
            raise _Failed(f"expected the choices {' | '.join(wanted) or 'none'}, "
                          f"but the message offered {' | '.join(titles) or 'none'}")

    def _state(self, expected: str) -> None:
        match = _STATE.fullmatch(expected)
        if match is None:
            raise _Failed(f"'state: {expected}' is not a state, or a state and (reason)")
        session = self._session()
        if session is None:
            raise _Failed(f"expected state {expected}, but no session has started")
        got = f"{session.state} ({session.close_reason})" if session.close_reason \
            else session.state
        state, reason = match.groups()
        if session.state != state or (reason is not None and session.close_reason != reason):
            raise _Failed(f"expected state {expected}, but the session is in {got}")

    def _wait(self, value: str) -> None:
        delta = duration(value)
        assert delta is not None  # the parser checked it
        self.transcript.append(f"(wait {value})")
        target = self.clock.now() + delta
        session = self._session()
        if session is not None and session.is_open:
            warning = self.suite.warning
            if warning is not None and not session.warned \
                    and session.expires_at - warning <= target:
                self._advance_to(session.expires_at - warning)
                self.engine.warn(session.id)
            if session.expires_at <= target:
                self._advance_to(session.expires_at)
                self.engine.expire(session.id)
        self._advance_to(target)

    # -- helpers -------------------------------------------------------------------------

    def _advance_to(self, moment: datetime) -> None:
        ahead = moment - self.clock.now()
        if ahead > timedelta(0):
            self.clock.advance(ahead)

    def _session(self) -> SessionRecord | None:
        mine = [s for s in self.store.sessions() if s.phone == PHONE]
        return mine[-1] if mine else None

    def _nothing_unread(self, line: Line | None) -> None:
        if self.unread:
            extra = _indented(self.unread[0].body)
            raise _Failed(f"the bot also said\n      {extra}\n    which the test does not list "
                          "(add a '<' line for it)")


def _matches(expected: str, message: Outbound) -> bool:
    """`@key`: the flow's text `key`; else the body, with `...` for anything."""
    if expected.startswith("@"):
        return message.key == expected[1:].strip()
    pattern = ".*?".join(re.escape(part.replace("\\n", "\n")) for part in expected.split("..."))
    return re.fullmatch(pattern, message.body, flags=re.DOTALL) is not None


def _indented(text: str) -> str:
    """Later lines of a message under its first, in a report."""
    return "\n".join(("      " + line) if line and n else line
                     for n, line in enumerate(text.split("\n")))
