"""From a WhatsApp message to clauses of words: folding, clauses, typos.

Pure and stdlib-only; everything per message is a few regex passes and dict lookups,
and the typo index is built once.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple

__all__ = ["Clause", "Typos", "clauses", "fold", "normalize", "phonetic", "squeeze"]

_CLAUSE_SPLIT = re.compile(r"([.,;:!¡?¿\n]+)")
_NON_WORD = re.compile(r"[\W_]+")
_WORD = re.compile(r"[^\W_]+|👋")
# The Unicode combining-diacritic blocks: what NFKD splits accents and tildes into.
_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_REPEATS = re.compile(r"(\w)\1+")
# An address or a link is never an order, whatever words it is made of.
_ADDRESS = re.compile(r"[^\s@]+@[^\s@]+|(?:https?://|www\.)\S+", re.IGNORECASE)
_LAUGH = frozenset("jaeihs")
# Words in quotes are reported, not said: 'me puso "cancelá todo"'.
_QUOTED = re.compile(r'"[^"\n]*"|“[^”\n]*”|«[^»\n]*»')
_QUOTES = frozenset('"“«')
# Marks after which a ¿ opened before no longer reaches.
_SENTENCE_END = frozenset("?.!\n")


class Clause(NamedTuple):
    """The words of one clause, as typed, and whether it sits inside a question."""

    words: tuple[str, ...]
    asked: bool


def fold(text: str) -> str:
    """Lowercase and strip accents and tildes (ñ -> n); punctuation and emoji stay."""
    text = text.casefold()
    return text if text.isascii() else _MARKS.sub("", unicodedata.normalize("NFKD", text))


def squeeze(word: str) -> str:
    """Letter runs to one letter, so "siii" and "chauuu" meet "si" and "chau"."""
    return _REPEATS.sub(r"\1", word)


def normalize(text: str) -> str:
    """Lowercase, strip accents (ñ -> n), drop punctuation/emoji, collapse spaces."""
    return " ".join(_NON_WORD.sub(" ", fold(text)).split())


def laugh(word: str) -> bool:
    """"jaja", "jajsjajs", "JAJAJA": laughter, typed every way."""
    return len(word) >= 4 and word.count("j") >= 2 and _LAUGH.issuperset(word)


def clauses(text: str) -> Iterator[Clause]:
    """Split at punctuation; a clause is asked when it sits inside ¿...? or before a ?."""
    if "@" in text or "http" in text or "www." in text:
        text = _ADDRESS.sub(" ", text)
    if not _QUOTES.isdisjoint(text):
        text = unquoted(text)
    parts = _CLAUSE_SPLIT.split(text)
    last = len(parts) - 1
    opened = False
    for k in range(0, len(parts), 2):
        opened = opened or (k > 0 and "¿" in parts[k - 1])
        after = parts[k + 1] if k < last else ""
        words = tuple(_WORD.findall(parts[k]))
        if words:
            yield Clause(words, opened or "?" in after)
        if not _SENTENCE_END.isdisjoint(after):
            opened = False


def unquoted(text: str) -> str:
    """The text without what it quotes, unless the quote is all there is: a message
    that only quotes ("cancelar") still says it."""
    rest = _QUOTED.sub(" , ", text)
    return rest if _WORD.search(rest) else text


def phonetic(word: str) -> str:
    """A spelling key for typos that sound right: prueva, canselar, kiero, ola."""
    for spelled, sound in _SOUNDS:
        if spelled in word:
            word = word.replace(spelled, sound)
    return word


# Order matters: "qu" before "q", "ch" kept before the h goes.
_SOUNDS = (("qu", "k"), ("q", "k"), ("ce", "se"), ("ci", "si"), ("c", "k"), ("z", "s"),
           ("v", "b"), ("ch", "\x00"), ("h", ""), ("\x00", "ch"), ("w", "gu"))


class Typos:
    """Typo correction towards a fixed set of words.

    Two ways: the same sound spelled otherwise (one phonetic key: "prueva", "kiero"), or
    one edit away as typed (a letter missing, extra, changed or swapped: "cancelr",
    "cancleá"). Edits come from a deletion index (every word with one letter removed),
    so a lookup costs a handful of dict probes; a candidate must keep the first letter.
    A changed letter counts only in words longer than `min_length`: short words differ
    by one letter too often ("peres", "pares").
    """

    def __init__(self, targets: Mapping[str, tuple[str, str]], *, min_length: int = 5) -> None:
        """`targets`: word -> (what to read it as, the group it belongs to)."""
        self._min = min_length
        self._targets = dict(targets)
        self._sounds: dict[str, str] = {}
        self._deletions: dict[str, set[str]] = {}
        for word, (canonical, _) in targets.items():
            self._sounds.setdefault(phonetic(word), canonical)
            if len(word) >= min_length:
                for variant in _deletions(word):
                    self._deletions.setdefault(variant, set()).add(word)

    def correct(self, word: str) -> str | None:
        """The canonical word this one is a typo of, or None."""
        found = self._sounds.get(phonetic(word))
        if found is not None or len(word) < self._min - 1:
            return found
        candidates: set[str] = set(self._deletions.get(word, ()))
        for variant in _deletions(word):
            candidates |= self._deletions.get(variant, set())
            if variant in self._targets and len(variant) >= self._min:
                candidates.add(variant)
        fixes = sorted((abs(len(c) - len(word)), c) for c in candidates
                       if c[0] == word[0] and one_edit(word, c)
                       and (len(c) != len(word) or len(word) > self._min or _swapped(word, c)))
        # "vmos" could be "vamos" or "vemos": a guess is worse than no fix. Words of one
        # group ("cancelr": cancela, cancelar) leave no such doubt.
        if len({self._targets[c][1] for _, c in fixes}) != 1:
            return None
        return self._targets[fixes[0][1]][0]


def _deletions(word: str) -> Iterable[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


def _swapped(a: str, b: str) -> bool:
    # Short words differ by one letter too often ("peres", "pares"); a swap is a typo.
    return sorted(a) == sorted(b)


def one_edit(a: str, b: str) -> bool:
    """Damerau distance of exactly one between two different strings."""
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(diff) != 2:
            return len(diff) == 1
        i, j = diff
        return j == i + 1 and a[i] == b[j] and a[j] == b[i]
    short, long = sorted((a, b), key=len)
    if len(long) - len(short) != 1:
        return False
    pairs = enumerate(zip(short, long[: len(short)], strict=True))
    i = next((k for k, (x, y) in pairs if x != y), len(short))
    return short[i:] == long[i + 1:]
