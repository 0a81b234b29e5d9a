"""The phrase table intent detection reads with: built once, from engine.core.lexicon.

Every phrase, a flow's own included, is read the way a message is (folded, abbreviations
expanded, verb forms as lemma and mood), so a phrase written "cancelalo" matches a
message typed "Cancélalo!!". `Phrasebook.words` turns raw words into those canonical
words (cached: words repeat) and `Phrasebook.scan` finds the longest phrases in them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from engine.core import lexicon as lx
from engine.core.morphology import ACCENTED, conjugate, past_by_accent
from engine.core.tokens import Typos, clauses, fold, laugh, squeeze

__all__ = [
    "CUE", "FILLER", "NAMING", "NEUTRAL", "RETRACT", "SIGN_OFF", "TIME", "WAVE", "Entry",
    "Phrasebook", "Span", "Words", "rank",
]

# Labels of phrases that are not intents: they shape how a clause is read.
FILLER = "~filler"  # "gracias", "che": an answer may come with them
NEUTRAL = ""  # "no sé": holds intent words, means none
CUE = "=cue"  # "¿cómo...", "puedo": asks for information
NAMING = "=naming"  # "me llamo", "trabajo en": a name follows
RETRACT = "=retract"  # "quise decir": takes back the clauses before it
TIME = "~time"  # "buenas noches": a greeting, or a goodbye after thanks
SIGN_OFF = "~sign-off"  # "saludos"
WAVE = "~wave"  # 👋
WAVE_WORD = "👋"
# Words seen, with their reading; cleared when full (a few MB at most).
_CACHE_SIZE = 50_000
_SHARED: dict[tuple[tuple[str, tuple[str, ...]], ...], Phrasebook] = {}
# Accented words that are not past tenses ("José", "café", "aquí").
_NOT_PAST = frozenset({"jose", "cafe", "bebe", "aqui", "alli", "mani", "rene", "ole"})


@dataclass(frozen=True, slots=True)
class Entry:
    """What a phrase means: an intent or one of the labels above, and its strength."""

    label: str
    strength: str  # strong, solo or request (see engine.core.lexicon)


Phrase = tuple[str, ...]
# (start, end, entry) over a clause's words; entry None for a word in no phrase.
Span = tuple[int, int, "Entry | None"]
Reading = tuple[tuple[str, ...], tuple[bool, ...], tuple[bool, ...]]


@dataclass(frozen=True, slots=True)
class Words:
    """A clause's canonical words, with what the raw words said about case and tense."""

    canon: list[str]
    capital: list[bool]
    past: list[bool]


class Phrasebook:
    """Verb forms, phrases and typo targets, compiled; ``extra`` adds phrases per intent.

    Building one takes a tenth of a second, so `shared` keeps one per distinct `extra`:
    every flow without a vocabulary of its own reads with the same book.
    """

    @classmethod
    def shared(cls, extra: Mapping[str, Iterable[str]] | None = None) -> Phrasebook:
        """The book for this `extra`, built on first use."""
        key = tuple(sorted((intent, (phrases,) if isinstance(phrases, str) else tuple(phrases))
                           for intent, phrases in (extra or {}).items()))
        book = _SHARED.get(key)
        if book is None:
            book = cls(extra)
            _SHARED[key] = book
        return book

    def __init__(self, extra: Mapping[str, Iterable[str]] | None = None) -> None:
        self._forms: dict[str, tuple[str, str, str]] = {}
        for lemma, conjugation in lx.VERBS.items():
            for form, mood in conjugate(lemma, conjugation).items():
                self._forms.setdefault(squeeze(form), (lemma, mood, conjugation))
        self._abbreviations = {k: tuple(v.split()) for k, v in lx.ABBREVIATIONS.items()}
        self._phrases: dict[Phrase, Entry] = {}
        self.known: set[str] = set(lx.NOT_TYPOS) | set(lx.PAST_WORDS) | set(lx.BRIDGES)
        self.known |= {w for v in self._abbreviations.values() for w in v}
        self.known |= {f"{lemma}:{mood}" for lemma, mood, _ in self._forms.values()}
        self._typos = Typos({})  # no fixes while the phrases themselves are read
        self._cache: dict[str, Reading] = {}
        self._load_builtin()
        self._load_extra(extra or {})
        self._lengths = self._lengths_by_first_word()
        self._typos = Typos(self._typo_targets())
        self._cache.clear()  # words read while building knew no typos yet

    # -- building -------------------------------------------------------------------

    def _load_builtin(self) -> None:
        for labels, strength in (
            ({FILLER: lx.FILLERS, NEUTRAL: lx.NEUTRAL, CUE: lx.CUES,
              NAMING: lx.NAMING, TIME: lx.TIME_GREETINGS, SIGN_OFF: lx.SIGN_OFFS,
              RETRACT: lx.RETRACTIONS},
             "strong"),
            (lx.SOLO, "solo"), (lx.STRONG, "strong"), (lx.REQUEST, "request"),
        ):
            for label, phrases in labels.items():
                for phrase in phrases:
                    self._add(phrase, label, strength)
        self._phrases[(WAVE_WORD,)] = Entry(WAVE, "strong")
        for (lemma, mood), (label, strength) in lx.VERB_SIGNALS.items():
            self._phrases[(f"{lemma}:{mood}",)] = Entry(label, strength)

    def _load_extra(self, extra: Mapping[str, Iterable[str]]) -> None:
        for intent, phrases in extra.items():
            if intent not in lx.INTENTS:
                raise ValueError(
                    f"unknown intent {intent!r} in extra; valid intents: {', '.join(lx.INTENTS)}"
                )
            for phrase in [phrases] if isinstance(phrases, str) else phrases:
                key = self._key(phrase)
                if not key:
                    raise ValueError(f"empty phrase {phrase!r} for intent {intent!r}")
                held = self._phrases.get(key)
                if held is None or rank(intent) <= rank(held.label):
                    self._phrases[key] = Entry(intent, "strong")
                self.known.update(key)

    def _add(self, phrase: str, label: str, strength: str) -> None:
        key = self._key(phrase)
        held = self._phrases.get(key)
        # A phrase listed twice keeps the stronger intent.
        if held is None or rank(label) <= rank(held.label):
            self._phrases[key] = Entry(label, strength)
        self.known.update(key)

    def _key(self, phrase: str) -> Phrase:
        words = [w for clause in clauses(phrase) for w in clause.words]
        return tuple(self.words(words).canon)

    def _lengths_by_first_word(self) -> dict[str, tuple[int, ...]]:
        lengths: dict[str, set[int]] = {}
        for key in self._phrases:
            lengths.setdefault(key[0], set()).add(len(key))
        return {word: tuple(sorted(ls, reverse=True)) for word, ls in lengths.items()}

    def _typo_targets(self) -> dict[str, tuple[str, str]]:
        """Words worth fixing a typo towards, with the intent they belong to."""
        targets: dict[str, tuple[str, str]] = {}
        for key, entry in self._phrases.items():
            for word in key:
                if entry.label in lx.INTENTS and ":" not in word:
                    held = targets.get(word, (word, entry.label))[1]
                    targets[word] = (word, entry.label if held == entry.label else "*")
        for form, (lemma, mood, _) in self._forms.items():
            signal = lx.VERB_SIGNALS.get((lemma, mood))
            if signal is not None:
                targets.setdefault(form, (f"{lemma}:{mood}", signal[0]))
        return targets

    # -- words ------------------------------------------------------------------------

    def words(self, raw: Iterable[str]) -> Words:
        """The canonical words of a clause's raw words, in order."""
        words = Words([], [], [])
        verbs = False
        for token in raw:
            canon, capital, past = self._cache.get(token) or self._remember(token)
            words.canon.extend(canon)
            words.capital.extend(capital)
            words.past.extend(past)
            verbs = verbs or ":" in canon[0]
        if verbs:
            read_clitics(words.canon)
        return words

    def _remember(self, token: str) -> Reading:
        """A token's canonical words, capitals and past flags, cached: words repeat."""
        low = token.casefold()
        canon = self._canonical(low)
        first = canon[0]
        past = first.endswith(":past") or first in lx.PAST_WORDS or _accented_past(low, first)
        rest = (False,) * (len(canon) - 1)  # an abbreviation: "nv" -> "nos vemos"
        reading = (canon, (token[:1].isupper(), *rest), (past, *rest))
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = reading
        return reading

    def _canonical(self, low: str) -> tuple[str, ...]:
        """One lowercased token as canonical words: more than one for an abbreviation."""
        folded = fold(low)
        word = squeeze(folded)
        if laugh(word):
            return ("jaja",)
        expanded = self._abbreviations.get(folded) or self._abbreviations.get(word)
        if expanded is not None:
            return expanded
        return (self._word(word, low),)

    def _word(self, word: str, low: str) -> str:
        """A folded word as the table knows it: a verb as lemma:mood, else itself or the
        word it is a typo of."""
        accented = ACCENTED.get(low)
        if accented is not None:
            return f"{accented[0]}:{accented[1]}"
        form = self._forms.get(word)
        if form is not None:
            lemma, mood, conjugation = form
            if mood in ("imp", "pres1") and not low.isascii() and past_by_accent(
                    low, conjugation):
                mood = "past"
            return f"{lemma}:{mood}"
        if word in self.known or word.isdigit():
            return word
        return self._typos.correct(word) or word

    def scan(self, canon: list[str]) -> list[Span]:
        """Greedy longest phrases; a word outside any phrase comes with None."""
        spans: list[Span] = []
        i = 0
        while i < len(canon):
            for size in self._lengths.get(canon[i], ()):
                # Near the end a slice is shorter than asked: the span ends where it does.
                entry = self._phrases.get(tuple(canon[i:i + size]))
                if entry is not None and i + size <= len(canon):
                    spans.append((i, i + size, entry))
                    i += size
                    break
            else:
                spans.append((i, i + 1, None))
                i += 1
        return spans


def rank(label: str) -> int:
    """Precedence of a label: 0 for cancelacion; labels that are not intents come last."""
    return lx.PRECEDENCE.index(label) if label in lx.PRECEDENCE else len(lx.PRECEDENCE)


def read_clitics(canon: list[str]) -> None:
    """A pronoun or a subject before a verb makes it a statement: "se cancela sola",
    "me canceló", "el sistema cancela los turnos"."""
    for k in range(1, len(canon)):
        lemma, _, mood = canon[k].partition(":")
        before = canon[k - 1]
        earlier = canon[k - 2] if k > 1 else ""
        pronoun = (before in lx.PROCLITICS or before in ("lo", "la")) and (
            earlier not in lx.NEGATORS)
        subject = earlier in lx.DETERMINERS and ":" not in before
        if mood.startswith("imp") and (pronoun or subject):
            canon[k] = f"{lemma}:ind"
        elif mood == "pres1" and before in lx.PROCLITICS and (lemma, mood) in lx.VERB_SIGNALS:
            canon[k] = f"{lemma}:past"


def _accented_past(low: str, canon: str) -> bool:
    return (len(low) >= 4 and low[-1] in "éóí" and ":" not in canon
            and canon not in _NOT_PAST)
