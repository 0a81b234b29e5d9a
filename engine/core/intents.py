"""Intent detection for rioplatense Spanish WhatsApp messages, behind a port.

`IntentDetector` is the port: anything with `detect(text, *, expects=None)` can stand in
(INTENT_DETECTOR in the settings names one, e.g. an NLU service's client). `Intents` is
the default: rules over the vocabulary in engine.core.lexicon, deterministic and cheap,
compiled once (engine.core.phrasebook). How a message is read:

1. Addresses and links go; the rest splits into clauses at punctuation, each marked
   asked when it sits inside a question.
2. Words are folded (case, accents, repeated letters), abbreviations expanded, verb forms
   read as lemma and mood (engine.core.morphology), and typos one edit away corrected.
3. Each clause is scanned for the longest phrases. A "no" flips the intent of what it
   governs ("no quiero la prueba"); commas end its reach ("no, quiero seguir").
4. Questions, reports of the past ("ya cancelé Netflix") and names never close; answers
   like "sí" or "no" count only when they stand alone. Nor do closing words named
   ("antes de cancelar", "ese chau"), supposed ("capaz cancele"), quoted ('me puso
   "cancelá todo"') or taken back ("chau, perdón, quise decir hola").
5. The highest intent wins: cancelacion > despedida > prueba > negacion > afirmacion >
   saludo. When the step expects a name, an email or free text, a closing word counts
   only in a clause that is nothing but a goodbye or a cancellation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol, runtime_checkable

from engine.core import lexicon as lx
from engine.core.phrasebook import (
    CUE,
    FILLER,
    NAMING,
    NEUTRAL,
    RETRACT,
    SIGN_OFF,
    TIME,
    WAVE,
    Entry,
    Phrasebook,
    Span,
    Words,
)
from engine.core.tokens import Clause, clauses, normalize

__all__ = ["EXPECTS", "INTENTS", "IntentDetector", "Intents", "detect", "normalize"]

INTENTS = lx.INTENTS
# What a step may say it expects (Flow.expects); None means anything.
EXPECTS: tuple[str, ...] = ("name", "email", "free", "yesno")

_CLOSING = frozenset({"cancelacion", "despedida"})
_ANSWERS = frozenset({"afirmacion", "negacion"})
_NEGATABLE = frozenset({"cancelacion", "despedida", "prueba", "afirmacion"})
# Phrases that make a clause more than an answer.
_CONTENT = frozenset({NEUTRAL, CUE, NAMING, RETRACT})
# Phrases around which a closing word does not close: a question, a name.
_HOLDS = frozenset({CUE, NAMING})
# Answers to these leave a closing word standing only in a clause of its own.
_ANSWER_EXPECTED = frozenset({"name", "email", "free"})


@runtime_checkable
class IntentDetector(Protocol):
    """The port: one of INTENTS, or None, for a message and what its step expects."""

    def detect(self, text: str, *, expects: str | None = None) -> str | None: ...


class Intents:
    """The rule-based detector; ``extra`` adds a flow's own phrases per intent."""

    def __init__(self, extra: Mapping[str, Iterable[str]] | None = None) -> None:
        self._book = Phrasebook.shared(extra)
        self._emoji = str.maketrans(dict(lx.EMOJI))

    def detect(self, text: str, *, expects: str | None = None) -> str | None:
        """The highest-precedence intent in ``text``, or None; see the module docstring."""
        if expects is not None and expects not in EXPECTS:
            raise ValueError(f"expects={expects!r} is not one of {', '.join(EXPECTS)}")
        shouting = text.isupper()
        found: dict[str, bool] = {}
        thanks = False
        for clause in clauses(text if text.isascii() else text.translate(self._emoji)):
            words = self._book.words(clause.words)
            said = self._clause(clause, words, shouting)
            if said.pop(RETRACT, False):
                # "chau, perdón, quise decir hola": the goodbye is taken back.
                for label in _CLOSING:
                    found.pop(label, None)
            for label, clean in said.items():
                found[label] = found.get(label, False) or clean
            thanks = thanks or not lx.CLOSURE_MARKERS.isdisjoint(words.canon)
        _resolve(found, thanks)
        if expects in _ANSWER_EXPECTED:
            for label in _CLOSING & found.keys():
                if not found[label]:
                    del found[label]
        return next((intent for intent in lx.PRECEDENCE if intent in found), None)

    def _clause(self, clause: Clause, words: Words, shouting: bool) -> dict[str, bool]:
        """Intent -> whether the clause held nothing else (a clean answer)."""
        spans = self._book.scan(words.canon)
        labels: set[str] = set()
        report = False
        for i, _, entry in spans:
            labels.add(NEUTRAL if entry is None else entry.label)
            report = report or (entry is None and words.past[i])
        clean = labels.isdisjoint(_CONTENT)
        held = clause.asked or not labels.isdisjoint(_HOLDS)
        # "¿puedo cancelar la prueba?": the trial is what the verb acts on, not a request.
        cancelling = "cancelacion" in labels
        found: dict[str, bool] = {RETRACT: True} if RETRACT in labels else {}
        for i, j, entry in _negated(words.canon, spans):
            label = entry.label
            if ((entry.strength == "solo" and not clean) or (report and label != "saludo")
                    or (cancelling and label == "prueba")):
                continue
            if entry.strength != "request" and (
                    (label in _CLOSING and held) or (label in _ANSWERS and clause.asked)):
                continue
            if label in _CLOSING and not shouting and self._is_name(words, i, j):
                continue
            if label in _CLOSING and _not_said(words.canon, i, j, entry):
                continue
            found[label] = found.get(label, False) or clean
        return found

    def _is_name(self, words: Words, i: int, j: int) -> bool:
        """A capitalised closing word beside an unknown capitalised word: "Ana Chau"."""
        if not any(words.capital[i:j]):
            return False
        return any(0 <= k < len(words.canon) and words.capital[k]
                   and words.canon[k] not in self._book.known for k in (i - 1, j))


def _negated(canon: list[str], spans: list[Span]) -> Iterator[tuple[int, int, Entry]]:
    """The spans that carry a label, with "no" flipping what it governs to negacion.

    A phrase that ends in "no" ("todavía no me quiero ir", "que no tenga que cancelar")
    governs phrases after it, but not a lone answer word ("que no se me pierdan").
    """
    negated = False
    answers_too = False
    for i, j, entry in spans:
        if entry is None or entry.label in _CONTENT:
            negated = negated and entry is None and canon[i] in lx.BRIDGES
            continue
        if negated and entry.label in _NEGATABLE and (answers_too or entry.strength != "solo"):
            entry = Entry("negacion", "strong")
        elif entry.label == "negacion" and canon[i] in lx.NEGATORS:
            negated = True
            answers_too = True
        elif entry.label == "negacion" and canon[j - 1] in lx.NEGATORS:
            negated = True
            answers_too = False
        yield i, j, entry


def _not_said(canon: list[str], i: int, j: int, entry: Entry) -> bool:
    """A closing word named or supposed rather than said: "antes de cancelar", "ese chau
    era para otro chat", "capaz cancele más adelante", "hasta mañana no puedo"."""
    if i > 0 and canon[i - 1] in lx.MENTIONS:
        return True
    before = canon[:i]
    pairs = {" ".join(canon[k:k + 2]) for k in range(max(0, i - 2), i)}
    if entry.strength != "request" and not lx.HEDGES.isdisjoint({*before, *pairs}):
        return True
    # "hasta mañana" is a goodbye; "hasta mañana no tengo la info" says until when.
    return canon[i] == "hasta" and j < len(canon) and canon[j] in lx.NEGATORS


def _resolve(found: dict[str, bool], thanks: bool) -> None:
    """Settle the words whose intent depends on the rest: "buenas noches", "saludos", 👋."""
    found.pop(FILLER, None)
    opener = "saludo" in found
    time = found.pop(TIME, None)
    if time is not None:
        _add(found, "despedida" if thanks and not opener else "saludo", time)
    sign_off = found.pop(SIGN_OFF, None)
    if sign_off is not None:
        greets = opener or (time is not None and not thanks)
        _add(found, "saludo" if greets else "despedida", sign_off)
    wave = found.pop(WAVE, None)
    if wave is not None and (thanks or "despedida" in found):
        _add(found, "despedida", wave)
    elif wave is not None and not found:
        found["saludo"] = wave


def _add(found: dict[str, bool], label: str, clean: bool) -> None:
    found[label] = found.get(label, False) or clean


_DEFAULT = Intents()


def detect(text: str, *, expects: str | None = None) -> str | None:
    """Detect with the built-in vocabulary; see ``Intents.detect``."""
    return _DEFAULT.detect(text, expects=expects)
