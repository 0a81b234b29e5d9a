"""Load-time checks of a flow class. Each problem names the file, the place and the fix.

`check_flow` collects every problem instead of stopping at the first, so that
`tertulia flows check` can report them all in one run.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterable, Mapping
from typing import Any

from engine.core.choices import MAX_CHOICES, MAX_TITLE
from engine.core.errors import FlowDefinitionError
from engine.core.flow import (
    BASE_TEXTS,
    ENGINE_CLOSE_REASONS,
    ENGINE_TRIGGERS,
    Flow,
    Route,
    StepFn,
    placeholders,
)
from engine.core.flowextras import check_extras
from engine.core.flowvalues import provided_values

__all__ = ["check_flow", "routes_of", "steps_of"]

REQUIRED_FINAL = ("closed", "timeout", "cancelled")
_ROW_KEYS = frozenset({"trigger", "source", "dest", "say", "reason"})
_REASON_MAX = 32  # sessions.close_reason is a String(32)


class _Report:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[FlowDefinitionError] = []

    def add(self, where: str, problem: str, fix: str) -> None:
        self.problems.append(FlowDefinitionError(self.file, where, problem, fix))


def check_flow(cls: type[Flow], file: str) -> list[FlowDefinitionError]:
    """Every problem with `cls`, in the order a reader of the file meets them."""
    report = _Report(file)
    if not _check_header(cls, report):
        return report.problems
    _check_close_reasons(cls, report)
    routes = _check_table(cls, report)
    _check_steps(cls, routes, report)
    _check_texts(cls, report)
    _check_choices(cls, report)
    _check_placeholders(cls, report)
    for where, problem, fix in check_extras(cls, routes):
        report.add(where, problem, fix)
    _check_graph(cls, routes, report)
    return report.problems


def routes_of(cls: type[Flow]) -> list[Route]:
    """The flow's own transition table, one Route per (trigger, source)."""
    routes = []
    for row in cls.transitions:
        for source in _sources(cls, row.get("source")):
            routes.append(
                Route(str(row["trigger"]), source, str(row["dest"]), _says(row), row.get("reason"))
            )
    return routes


def steps_of(cls: type[Flow]) -> dict[str, StepFn]:
    """state -> the method marked @step(state)."""
    steps: dict[str, StepFn] = {}
    for _, fn in inspect.getmembers(cls, inspect.isfunction):
        state = getattr(fn, "__tertulia_step__", None)
        if state is not None:
            steps[state] = fn
    return steps


def _sources(cls: type[Flow], source: Any) -> list[str]:
    if source == "*":
        return [s for s in cls.states if s not in cls.final]
    return [source] if isinstance(source, str) else [str(s) for s in source or ()]


def _says(row: Mapping[str, Any]) -> tuple[str, ...]:
    say = row.get("say", ())
    return (say,) if isinstance(say, str) else tuple(say)


def _check_header(cls: type[Flow], report: _Report) -> bool:
    try:
        name: object = cls.name
    except AttributeError:  # Flow only annotates it
        name = None
    if not isinstance(name, str) or not name.isidentifier():
        report.add(f"class {cls.__name__}", f"name is {name!r}", "set name = 'my_flow' (a word)")
        return False
    states = list(getattr(cls, "states", ()) or ())
    if not states:
        report.add(f"flow {name!r}", "it declares no states", "list them in states = [...]")
        return False
    initial = getattr(cls, "initial", None)
    if initial not in states:
        report.add(
            f"flow {name!r}", f"initial state {initial!r} is not in states",
            f"set initial to one of {states}",
        )
        return False
    for required in REQUIRED_FINAL:
        if required not in cls.final or required not in states:
            report.add(
                f"flow {name!r}", f"there is no {required!r} final state",
                f"add {required!r} to both states and final",
            )
    for state in cls.final:
        if state not in states:
            report.add(f"final state {state!r}", "it is not in states", "add it to states")
    return not report.problems


def _check_table(cls: type[Flow], report: _Report) -> list[Route]:
    known = set(cls.states)
    for index, row in enumerate(cls.transitions):
        trigger = row.get("trigger")
        where = f"transition {index + 1} (trigger {trigger!r})"
        for key in set(row) - _ROW_KEYS:
            report.add(where, f"unknown key {key!r}", f"use only {sorted(_ROW_KEYS)}")
        if not isinstance(trigger, str) or not trigger.isidentifier():
            report.add(where, "trigger must be a word", "set 'trigger': 'accept'")
        elif trigger in ENGINE_TRIGGERS:
            report.add(where, f"trigger {trigger!r} is reserved by the engine", "rename it")
        for state in [*_sources(cls, row.get("source")), row.get("dest")]:
            if state not in known:
                report.add(where, f"unknown state {state!r}", f"use one of {sorted(known)}")
        for state in _sources(cls, row.get("source")):
            if state in cls.final:
                report.add(where, f"source {state!r} is a final state", "start from an open state")
        _check_reason(cls, row, where, report)
        for key in _says(row):
            _check_text(cls, key, where, report)
    return routes_of(cls)


def _check_close_reasons(cls: type[Flow], report: _Report) -> None:
    declared = cls.close_reasons
    if not isinstance(declared, Mapping):
        report.add("close_reasons", f"it is {declared!r}, not a mapping",
                   "write close_reasons = {'booked': 'closed'} (reason -> final state)")
        return
    final = sorted(cls.final)
    for reason, state in declared.items():
        where = f"close_reasons[{reason!r}]"
        if not isinstance(reason, str) or not reason.isidentifier():
            report.add(where, "a reason must be a word", "name it like 'booked'")
        elif len(reason) > _REASON_MAX:
            report.add(where, f"the reason is longer than {_REASON_MAX} characters",
                       "shorten it; sessions.close_reason holds 32")
        elif reason in ENGINE_CLOSE_REASONS:
            report.add(where, f"{reason!r} is one of the engine's own reasons",
                       "remove it from close_reasons; the engine's need no declaring")
        elif state not in cls.final:
            report.add(where, f"it leads to {state!r}, which is not a final state",
                       f"map it to one of {final}")


def _close_reasons(cls: type[Flow]) -> dict[str, str]:
    declared = cls.close_reasons if isinstance(cls.close_reasons, Mapping) else {}
    return {**declared, **ENGINE_CLOSE_REASONS}


def _check_reason(cls: type[Flow], row: Mapping[str, Any], where: str, report: _Report) -> None:
    dest, reason = row.get("dest"), row.get("reason")
    if dest not in cls.states:
        return  # already reported as an unknown state; advice about reasons would mislead
    if dest not in cls.final:
        if reason is not None:
            report.add(where, f"reason {reason!r} on a transition to open state {dest!r}",
                       "drop 'reason'; only closing transitions have one")
        return
    reasons = _close_reasons(cls)
    valid = sorted(r for r, state in reasons.items() if state == dest)
    if isinstance(reason, str) and reason.isidentifier() and reason not in reasons:
        report.add(where, f"reason {reason!r} is neither the engine's nor in close_reasons",
                   f"declare it with close_reasons = {{{reason!r}: {dest!r}}}, "
                   f"or use one of {valid}")
    elif reasons.get(str(reason)) != dest:
        report.add(
            where, f"a transition to final state {dest!r} has reason {reason!r}",
            f"set 'reason' to one of {valid}" if valid
            else f"declare one with close_reasons = {{{dest!r}: {dest!r}}}",
        )


def _check_text(cls: type[Flow], key: object, where: str, report: _Report) -> None:
    if key not in cls.texts and key not in BASE_TEXTS:
        report.add(where, f"text {key!r} is referenced but missing",
                   f"add {key!r} to texts")


def _check_steps(cls: type[Flow], routes: list[Route], report: _Report) -> None:
    steps = steps_of(cls)
    for state, fn in steps.items():
        where = f"step {fn.__name__}"
        if state not in cls.states:
            report.add(where, f"it names state {state!r}, which does not exist",
                       f"use one of {list(cls.states)}")
        elif state in cls.final:
            report.add(where, f"it names final state {state!r}", "steps handle open states only")
        else:
            _check_step_body(cls, fn, state, routes, report)
    for state in cls.states:
        if state not in cls.final and state not in steps:
            report.add(f"state {state!r}", "it has no step function",
                       f"add a method decorated with @step({state!r})")


def _check_step_body(
    cls: type[Flow], fn: StepFn, state: str, routes: list[Route], report: _Report
) -> None:
    where = f"step {fn.__name__} (state {state!r})"
    valid = {r.trigger for r in routes if r.source == state}
    for method, literal in _literal_calls(fn):
        if method == "stay":
            _check_text(cls, literal, where, report)
        elif method == "move" and literal not in valid:
            report.add(where, f"trigger {literal!r} does not leave state {state!r}",
                       f"add a transition from {state!r} with that trigger, or use one of "
                       f"{sorted(valid)}")


def _literal_calls(fn: StepFn) -> Iterable[tuple[str, str]]:
    """(method, string) for each `turn.stay("x")` / `turn.move("x")` written in `fn`."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("stay", "move")):
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    yield node.func.attr, arg.value


def _check_texts(cls: type[Flow], report: _Report) -> None:
    _check_text(cls, cls.start_text, "start_text", report)
    for state, key in cls.reprompts.items():
        if state not in cls.states:
            report.add(f"reprompts[{state!r}]", f"state {state!r} does not exist",
                       f"use one of {list(cls.states)}")
        _check_text(cls, key, f"reprompts[{state!r}]", report)
    credentials_state = cls.credentials_state
    if credentials_state is not None and (
        credentials_state not in cls.states or credentials_state in cls.final
    ):
        report.add("credentials_state", f"{credentials_state!r} is not an open state",
                   "name an open state, or set it to None")


def _check_choices(cls: type[Flow], report: _Report) -> None:
    declared = cls.choices
    if not isinstance(declared, Mapping):
        report.add("choices", f"it is {declared!r}, not a mapping",
                   "write choices = {'ask_day': [('lun', 'Lunes'), ('mar', 'Martes')]}")
        return
    for key, items in declared.items():
        where = f"choices[{key!r}]"
        _check_text(cls, key, where, report)
        if isinstance(items, str) or not isinstance(items, list | tuple) or not items:
            report.add(where, "it is not a list of choices",
                       "list them: ['Sí', 'No'] or [('si', 'Sí'), ('no', 'No')]")
            continue
        if len(items) > MAX_CHOICES:
            report.add(where, f"it offers {len(items)} choices; WhatsApp shows {MAX_CHOICES}",
                       f"keep {MAX_CHOICES} or fewer")
        _check_choice_items(items, where, report)


def _check_choice_items(items: Iterable[object], where: str, report: _Report) -> None:
    seen: set[str] = set()
    for item in items:
        pair = (item, item) if isinstance(item, str) else item
        if not (isinstance(pair, tuple) and len(pair) == 2
                and all(isinstance(p, str) and p.strip() for p in pair)):
            report.add(where, f"choice {item!r} is neither a title nor an (id, title) pair",
                       "write 'Lunes' or ('lun', 'Lunes')")
            continue
        choice_id, title = pair
        if len(title) > MAX_TITLE:
            report.add(where, f"title {title!r} is longer than {MAX_TITLE} characters",
                       "shorten it; WhatsApp cuts longer button and list titles")
        if choice_id in seen:
            report.add(where, f"id {choice_id!r} is offered twice", "give each choice its own id")
        seen.add(choice_id)


def _check_placeholders(cls: type[Flow], report: _Report) -> None:
    provided = provided_values(cls)
    for key, text in {**BASE_TEXTS, **cls.texts}.items():
        where = f"texts[{key!r}]"
        if not isinstance(text, str):
            report.add(where, f"it is {type(text).__name__}, not a string", "write it as '...'")
            continue
        try:
            needed = placeholders(text)
        except ValueError as exc:
            report.add(where, f"its braces do not parse ({exc})",
                       "write a literal brace as {{ or }}")
            continue
        for name in dict.fromkeys(needed):
            if provided is not None and name not in provided:
                report.add(where, f"placeholder {{{name}}} has no value: no step passes "
                           f"{name}= to move()/stay() and none stores turn.context[{name!r}]",
                           f"pass it, e.g. turn.move('...', {name}=...), store it in "
                           f"turn.context[{name!r}], or take it out of the text")


def _check_graph(cls: type[Flow], routes: list[Route], report: _Report) -> None:
    if any(p.where.startswith("transition") for p in report.problems):
        return  # a broken table would only add noise below
    edges: dict[str, set[str]] = {s: set() for s in cls.states}
    for r in routes:
        edges[r.source].add(r.dest)
    engine_exits = {dest for dest, _, _ in ENGINE_TRIGGERS.values()}
    reached = _reachable(cls.initial, edges) | engine_exits
    for state in cls.states:
        if state not in reached:
            report.add(f"state {state!r}", f"it is unreachable from {cls.initial!r}",
                       f"add a transition with 'dest': {state!r}, or remove the state")
    for state in cls.states:
        dead_end = not _reachable(state, edges) & set(cls.final)
        if state in reached and state not in cls.final and dead_end:
            report.add(f"state {state!r}", "no transition leads from it to a final state",
                       "add a transition from it towards 'closed'")


def _reachable(start: str, edges: Mapping[str, set[str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
