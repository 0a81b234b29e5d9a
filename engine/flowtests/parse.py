"""The conversation test format: plain lines a flow author reads and writes by hand.

    # Conversation tests for flows/booking.py
    timeout: 3m
    warning: 30s

    == a tap books a turn
    name: Lucía
    > hola
    < ¡Hola, Lucía! 💈 ...
    choices: Corte | Barba | Color
    > [Barba]
    < @ask_day
    state: day
    wait: 3m
    < @timeout_notice
    state: timeout (timeout)

- `#` starts a comment line; `flow:`, `timeout:` and `warning:` come before the first
  case (the flow defaults to the file's name; the timeout to 3m; no warning).
- `== title` starts a case: a fresh conversation, store and clock.
- `> text` is what the user writes, `> [Title]` a tap on the offered choice with that
  title, `name:` the profile name of the messages that follow.
- `< text` is the bot's next message ("..." for anything, `\\n` for a line break),
  `< @key` one rendered from the flow's text `key`; `choices:` the titles it offers.
- `state: day`, or `state: closed (booked)` with the close reason.
- `wait: 3m` moves the clock; due warnings and timeouts run.

After each `>` and `wait`, every message the bot sent is listed with `<`, in order:
one it sends and the test does not list is a failure too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from engine.core.errors import FlowTestError

__all__ = ["Case", "Line", "Suite", "duration", "parse"]

# A line's kind: say (>), tap (> [Title]), expect (<), choices, state, wait, name.
_KINDS = ("choices", "state", "wait", "name")
_SETTINGS = ("flow", "timeout", "warning")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(s|m|h)")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours"}


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    kind: str  # say | tap | expect | choices | state | wait | name
    value: str


@dataclass
class Case:
    title: str
    number: int
    lines: list[Line] = field(default_factory=list)


@dataclass
class Suite:
    path: Path
    flow: str
    timeout: timedelta = timedelta(minutes=3)
    warning: timedelta | None = None
    cases: list[Case] = field(default_factory=list)


def duration(text: str) -> timedelta | None:
    """'30s', '2m', '1.5h' -> a timedelta; None when `text` is not one."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        return None
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def parse(path: Path) -> Suite:
    """Read a `.tests` file; FlowTestError names the line of the first mistake."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowTestError(str(path), 0, f"it cannot be read ({exc})",
                            "pass a UTF-8 text file") from None
    suite = Suite(path, path.stem)
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        _read(suite, number, line)
    if not suite.cases:
        raise FlowTestError(str(path), 1, "it has no case",
                            "start one with a line '== what it checks'")
    return suite


def _read(suite: Suite, number: int, line: str) -> None:
    fail = _failer(suite.path, number)
    if line.startswith("=="):
        suite.cases.append(Case(line[2:].strip() or f"case at line {number}", number))
        return
    if line[0] in "<>":
        if not suite.cases:
            raise fail("a message comes before any case", "start a case with '== what it checks'")
        suite.cases[-1].lines.append(_message(line, number))
        return
    key, colon, value = line.partition(":")
    key = key.strip()
    value = value.strip()
    if not colon or key not in _KINDS + _SETTINGS:
        raise fail(f"{line[:40]!r} is not a line of the format",
                   "begin it with >, <, ==, #, or one of "
                   + ", ".join(f"{k}:" for k in _KINDS + _SETTINGS))
    if key in _SETTINGS:
        _setting(suite, key, value, fail)
        return
    if not suite.cases:
        raise fail(f"'{key}:' comes before any case", "start a case with '== what it checks'")
    if key == "wait" and duration(value) is None:
        raise fail(f"wait {value!r} is not a duration", "write it like 30s, 3m or 1h")
    suite.cases[-1].lines.append(Line(number, key, value))


def _message(line: str, number: int) -> Line:
    value = line[1:].strip()
    if line[0] == "<":
        return Line(number, "expect", value)
    if value.startswith("[") and value.endswith("]"):
        return Line(number, "tap", value[1:-1].strip())
    return Line(number, "say", value)


def _setting(suite: Suite, key: str, value: str, fail: _Fail) -> None:
    if suite.cases:
        raise fail(f"'{key}:' comes after the first case", "move it to the top of the file")
    if key == "flow":
        suite.flow = value
        return
    moment = duration(value)
    if moment is None or moment <= timedelta(0):
        raise fail(f"{key} {value!r} is not a duration", "write it like 30s, 3m or 1h")
    if key == "timeout":
        suite.timeout = moment
    else:
        suite.warning = moment


class _Fail:
    def __init__(self, path: Path, number: int) -> None:
        self.path = path
        self.number = number

    def __call__(self, problem: str, fix: str) -> FlowTestError:
        return FlowTestError(str(self.path), self.number, problem, fix)


def _failer(path: Path, number: int) -> _Fail:
    return _Fail(path, number)
