"""Load-time checks of a flow's optional parts: vocabulary, per-state timeouts, renamed.

Each check yields (where, problem, fix) for engine.core.flowcheck to report.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta

from engine.core.flow import Flow, Route, Timeout
from engine.core.intents import INTENTS

__all__ = ["check_extras"]

Problem = tuple[str, str, str]


def check_extras(cls: type[Flow], routes: list[Route]) -> Iterator[Problem]:
    yield from _vocabulary(cls)
    yield from _timeouts(cls, routes)
    yield from _renamed(cls)


def _open_states(cls: type[Flow]) -> list[str]:
    return [s for s in cls.states if s not in cls.final]


def _vocabulary(cls: type[Flow]) -> Iterator[Problem]:
    if not isinstance(cls.vocabulary, Mapping):
        yield ("vocabulary", f"it is {cls.vocabulary!r}, not a mapping",
               "write vocabulary = {'afirmacion': ['de diez']} (intent -> phrases)")
        return
    for intent, phrases in cls.vocabulary.items():
        where = f"vocabulary[{intent!r}]"
        if intent not in INTENTS:
            yield (where, f"{intent!r} is not an intent the engine knows",
                   f"use one of {list(INTENTS)}")
        elif isinstance(phrases, str) or not all(isinstance(p, str) for p in phrases):
            yield (where, "the phrases must be a list of strings",
                   f"write {intent!r}: [{phrases!r}]" if isinstance(phrases, str)
                   else "list the phrases as strings")


def _timeouts(cls: type[Flow], routes: list[Route]) -> Iterator[Problem]:
    if not isinstance(cls.timeouts, Mapping):
        yield ("timeouts", f"it is {cls.timeouts!r}, not a mapping",
               "write timeouts = {'confirm': Timeout(timedelta(minutes=10), 'remind')}")
        return
    open_states = _open_states(cls)
    for state, timeout in cls.timeouts.items():
        where = f"timeouts[{state!r}]"
        if state not in open_states:
            yield (where, f"{state!r} is not an open state", f"use one of {open_states}")
        elif not isinstance(timeout, Timeout):
            yield (where, f"it is {timeout!r}", "write Timeout(timedelta(minutes=10), 'remind')")
        elif not isinstance(timeout.after, timedelta) or timeout.after <= timedelta(0):
            yield (where, f"after is {timeout.after!r}", "give a positive timedelta")
        else:
            valid = sorted({r.trigger for r in routes if r.source == state} | {"expire"})
            if timeout.trigger not in valid:
                yield (where, f"trigger {timeout.trigger!r} does not leave state {state!r}",
                       f"add a transition from {state!r} with that trigger, or use one of "
                       f"{valid} ('expire' is the engine's timeout close)")


def _renamed(cls: type[Flow]) -> Iterator[Problem]:
    if not isinstance(cls.renamed, Mapping):
        yield ("renamed", f"it is {cls.renamed!r}, not a mapping",
               "write renamed = {'old_state': 'new_state'}")
        return
    open_states = _open_states(cls)
    for old, new in cls.renamed.items():
        where = f"renamed[{old!r}]"
        if old in cls.states:
            yield (where, f"{old!r} is still a state of the flow, so the entry never applies",
                   "remove the entry, or the old state")
        elif new not in open_states:
            yield (where, f"it leads to {new!r}, which is not an open state",
                   f"use one of {open_states}")
