"""Choices a flow offers with a text: WhatsApp quick replies and lists, or numbered lines.

A flow declares them per text key (Flow.choices). The engine remembers the choices of
the latest text that had them, while the session stays in its state, and reads the
user's answer against them: a tapped button or list item (its id), its words typed
out, or its number from the plain-text fallback. Channels decide how to show them:
the Twilio sender as a Content API template when one is configured for the text, and
everything else (dry run, the terminal, the web console) as numbered lines.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["MAX_CHOICES", "MAX_TITLE", "Choice", "dump", "load", "numbered", "pick"]

# WhatsApp's list picker holds 10 items, whose titles hold 24 characters.
MAX_CHOICES = 10
MAX_TITLE = 24
_NUMBER = re.compile(r"\s*([0-9]{1,2})\s*[.)]?\s*")


@dataclass(frozen=True, slots=True)
class Choice:
    """One option: `id` is what the step sees in `turn.choice`, `title` what the user sees."""

    id: str
    title: str


def numbered(body: str, choices: Sequence[Choice]) -> str:
    """The plain-text form: the body, then one numbered line per choice."""
    if not choices:
        return body
    lines = "\n".join(f"{n}. {choice.title}" for n, choice in enumerate(choices, 1))
    return f"{body}\n\n{lines}"


def pick(offered: Sequence[Choice], *, text: str, choice_id: str | None) -> Choice | None:
    """The offered choice a message answers: its id (a tap), its title (or the first
    words of only one title), or its number."""
    if not offered:
        return None
    for choice in offered:
        if choice_id is not None and choice.id == choice_id:
            return choice
    folded = _fold(text)
    for choice in offered:
        if folded and folded in (_fold(choice.title), _fold(choice.id)):
            return choice
    # The first words of one title only: "miércoles" for "Miércoles 15:00".
    starting = [c for c in offered if folded and f"{_fold(c.title)} ".startswith(f"{folded} ")]
    if len(starting) == 1:
        return starting[0]
    number = _NUMBER.fullmatch(text)
    if number is not None and 1 <= int(number.group(1)) <= len(offered):
        return offered[int(number.group(1)) - 1]
    return None


def dump(choices: Sequence[Choice]) -> str | None:
    """The JSON a row keeps (None for no choices): readable with sqlite3."""
    if not choices:
        return None
    return json.dumps([{"id": c.id, "title": c.title} for c in choices], ensure_ascii=False)


def load(raw: object) -> tuple[Choice, ...]:
    """Back from `dump`'s JSON (or the list a JSON column already decoded)."""
    if raw is None or raw == "":
        return ()
    items = json.loads(raw) if isinstance(raw, str | bytes) else raw
    if not isinstance(items, Iterable):
        return ()
    return tuple(Choice(str(item["id"]), str(item["title"])) for item in items)


def _fold(text: str) -> str:
    """Case, accents, punctuation and spacing away: "No, gracias!" == "no gracias"."""
    plain = unicodedata.normalize("NFKD", text.casefold())
    kept = "".join(ch for ch in plain if ch.isalnum() or ch.isspace())
    return " ".join(kept.split())
