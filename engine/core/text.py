"""Text helpers of the core: WhatsApp's body limit."""

from __future__ import annotations

import re

__all__ = ["MAX_BODY", "MAX_PARTS", "digits", "is_e164", "split_body", "truncate"]

# ASCII only and the whole string: `\d`, str.isdigit() and `$` would also accept "²",
# Arabic-Indic digits or a trailing newline, which int() or the log then choke on.
_DIGITS = re.compile(r"[0-9]+")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def digits(raw: str, *, max_len: int = 18) -> bool:
    """True for a plain run of ASCII digits that fits in a 64-bit column."""
    return len(raw) <= max_len and _DIGITS.fullmatch(raw) is not None


def is_e164(phone: str) -> bool:
    return _E164.fullmatch(phone) is not None


# Twilio rejects WhatsApp bodies over 1600 characters.
MAX_BODY = 1600
# A long body is split, but never into more messages than this (MAX_BODY_PARTS).
MAX_PARTS = 3
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
_ELLIPSIS = "…"


def split_body(body: str, limit: int = MAX_BODY, max_parts: int = MAX_PARTS) -> list[str]:
    """Split a long body at paragraph, then sentence, then word boundaries; keep order.

    Past `max_parts` messages the rest is cut, and the last part ends in '…'.
    """
    if len(body) <= limit:
        return [body]
    parts: list[str] = []
    for unit in _units(body, limit):
        if parts and len(parts[-1]) + 2 + len(unit) <= limit:
            parts[-1] = f"{parts[-1]}{_joiner(unit)}{unit}"
        else:
            parts.append(unit)
    kept = [p.strip() for p in parts if p.strip()]
    if len(kept) > max_parts:
        kept = kept[:max_parts]
        kept[-1] = truncate(kept[-1] + " " + _ELLIPSIS, limit)
    return kept


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, the cut marked with '…'."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + _ELLIPSIS


def _joiner(unit: str) -> str:
    return "\n\n" if getattr(unit, "paragraph_start", False) else " "


def _units(body: str, limit: int) -> list[str]:
    """Pieces no longer than `limit`, tagged with whether each starts a paragraph."""
    units: list[str] = []
    for paragraph in body.split("\n\n"):
        pieces = [paragraph] if len(paragraph) <= limit else _sentences(paragraph, limit)
        for index, piece in enumerate(pieces):
            units.append(_Tagged(piece, paragraph_start=index == 0))
    return units


def _sentences(paragraph: str, limit: int) -> list[str]:
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(paragraph):
        while len(sentence) > limit:
            cut = sentence.rfind(" ", 0, limit)
            cut = cut if cut > 0 else limit
            pieces.append(sentence[:cut])
            sentence = sentence[cut:].lstrip()
        if pieces and len(pieces[-1]) + 1 + len(sentence) <= limit:
            pieces[-1] = f"{pieces[-1]} {sentence}"
        else:
            pieces.append(sentence)
    return pieces


class _Tagged(str):
    paragraph_start: bool

    def __new__(cls, value: str, *, paragraph_start: bool) -> _Tagged:
        obj = super().__new__(cls, value)
        obj.paragraph_start = paragraph_start
        return obj
