"""Rule-based intent detection for rioplatense Spanish WhatsApp messages.

Every incoming message goes through ``detect``, so it stays deterministic,
explainable and cheap: all vocabulary is compiled once in ``Intents.__init__``.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping

__all__ = ["INTENTS", "Intents", "detect", "normalize"]

INTENTS: tuple[str, ...] = (
    "saludo", "afirmacion", "negacion", "prueba", "despedida", "cancelacion",
)

# Highest first: a request to stop beats anything polite around it, and a
# "no, gracias, chau" is a goodbye rather than a mere refusal.
_PRECEDENCE = ("cancelacion", "despedida", "prueba", "negacion", "afirmacion", "saludo")

_VOCAB: Mapping[str, tuple[str, ...]] = {
    "saludo": (
        "hola", "holis", "holi", "buenas", "buen dia", "buenos dias", "buenas tardes",
        "buenas noches", "que tal", "que onda", "como andas", "como estas", "como va",
        "hey",
    ),
    "afirmacion": (
        "si", "sip", "sisi", "dale", "de una", "obvio", "claro", "bueno", "ok", "okey",
        "okay", "oki", "joya", "genial", "perfecto", "listo", "por supuesto", "vamos",
        "de acuerdo", "me parece bien", "buenisimo", "barbaro", "mas vale",
        "no hay problema", "no hay drama",
    ),
    "negacion": (
        "no", "nop", "nope", "nah", "para nada", "ni ahi", "ni en pedo", "ni loco",
        "ni loca", "no gracias", "nunca", "no me interesa",
    ),
    "prueba": (
        "prueba", "pruebas", "pruebita", "probar", "probarlo", "probarla", "pruebo",
        "quiero probar", "prueba gratis", "quiero la prueba", "demo", "free trial",
        "trial", "periodo de prueba", "version de prueba",
    ),
    "despedida": (
        "chau", "chao", "chaucito", "adios", "bye", "hasta luego", "nos vemos",
        "hasta manana", "hasta pronto", "hasta la proxima", "me voy", "nos hablamos",
        "hablamos despues", "despues hablamos",
    ),
    "cancelacion": (
        "cancelar", "cancela", "cancelo", "cancele", "cancelen", "cancelalo",
        "cancelala", "cancelame", "cancelacion", "quiero cancelar", "basta", "stop",
        "parar", "no quiero seguir", "no quiero continuar", "no quiero mas", "dejalo",
        "salir", "de baja", "desuscribir", "desuscribirme", "unsubscribe",
        "no me escribas mas", "no me escriban mas", "no me mandes mas",
        "no me manden mas", "deja de escribirme", "dejen de escribirme",
        "deja de mandarme", "dejen de mandarme",
    ),
}

# Phrases that contain vocabulary but carry no intent; matching them first keeps
# "no sé" from reading as a refusal and "me voy a anotar" as a goodbye.
_NEUTRAL = ("no se", "no se si", "no entiendo", "si no", "me voy a")

# Questions and hypotheticals about cancelling ("se puede cancelar despues")
# are not orders, even when the user forgets the "?".
_CUES = (
    "puedo", "puede", "pueden", "podes", "podria", "como", "cuando", "despues",
    "donde", "y si", "si no", "que pasa", "hay que", "cualquier momento",
)

# Real words (and a common name) one edit away from the vocabulary: never "fix" them.
_NOT_TYPOS = frozenset({"pagar", "pasar", "parir", "dejado", "vimos", "candela"})

# Inside a literal question, "si"/"no" are not answers and cancel is not an order.
_ASKED_DROPS = frozenset({"cancelacion", "afirmacion", "negacion"})
# A preceding "no" flips these: "no quiero la prueba", "no quiero cancelar".
_NEGATABLE = frozenset({"prueba", "cancelacion"})

# Gestures that are answers on WhatsApp; normalize() alone would just drop them.
_EMOJI = str.maketrans({"👍": " ok ", "👌": " ok ", "✅": " ok "})
_CLAUSE_SPLIT = re.compile(r"([.,;:!¡?¿\n]+)")
_NON_WORD = re.compile(r"[\W_]+")
# The Unicode combining-diacritic blocks: what NFKD splits accents and tildes into.
_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_REPEATS = re.compile(r"(\w)\1+")
_MIN_TYPO_LEN = 5
_NO_INTENT = ""

Phrase = tuple[str, ...]


def normalize(text: str) -> str:
    """Lowercase, strip accents (ñ -> n), drop punctuation/emoji, collapse spaces."""
    return " ".join(_NON_WORD.sub(" ", _fold(text)).split())


def _fold(text: str) -> str:
    # Punctuation survives folding, so detect() can still split clauses afterwards.
    return _MARKS.sub("", unicodedata.normalize("NFKD", text.casefold()))


def _key(phrase: str) -> Phrase:
    # Squeezing letter runs on both sides makes "siii" and "chauuu" exact hits.
    return tuple(_REPEATS.sub(r"\1", normalize(phrase)).split())


def _one_edit(a: str, b: str) -> bool:
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


def _clauses(text: str) -> Iterator[tuple[str, bool]]:
    """Yield (clause, asked) where asked means the clause sits inside ¿...?."""
    parts = _CLAUSE_SPLIT.split(_fold(text if text.isascii() else text.translate(_EMOJI)))
    for k in range(0, len(parts), 2):
        before = parts[k - 1] if k else ""
        after = parts[k + 1] if k + 1 < len(parts) else ""
        yield parts[k], "¿" in before or "?" in after


def _merge(extra: Mapping[str, Iterable[str]] | None) -> dict[str, list[str]]:
    table = {intent: list(phrases) for intent, phrases in _VOCAB.items()}
    for intent, phrases in (extra or {}).items():
        if intent not in table:
            raise ValueError(
                f"unknown intent {intent!r} in extra; "
                f"valid intents: {', '.join(INTENTS)}"
            )
        table[intent].extend([phrases] if isinstance(phrases, str) else phrases)
    return table


class Intents:
    """Compiled vocabulary; ``detect`` maps a message to one of INTENTS or None."""

    def __init__(self, extra: Mapping[str, Iterable[str]] | None = None) -> None:
        self._phrases: dict[Phrase, str] = {_key(p): _NO_INTENT for p in _NEUTRAL}
        table = _merge(extra)
        # Lowest precedence first: a phrase listed twice keeps the stronger intent.
        for intent in reversed(_PRECEDENCE):
            for phrase in table[intent]:
                key = _key(phrase)
                if not key:
                    raise ValueError(f"empty phrase {phrase!r} for intent {intent!r}")
                self._phrases[key] = intent
        self._cues = frozenset(_key(c) for c in _CUES)
        self._lengths = self._lengths_by_first_word()
        self._known = frozenset(w for k in (*self._phrases, *self._cues) for w in k)
        self._known |= _NOT_TYPOS
        self._typo_targets = self._index_typo_targets()

    def _lengths_by_first_word(self) -> dict[str, tuple[int, ...]]:
        lengths: dict[str, set[int]] = {}
        for key in self._phrases:
            lengths.setdefault(key[0], set()).add(len(key))
        return {word: tuple(sorted(ls, reverse=True)) for word, ls in lengths.items()}

    def _index_typo_targets(self) -> dict[tuple[str, str], tuple[str, ...]]:
        # Typos rarely hit the first letter, and the last one carries Spanish
        # gender/number ("clara" vs "claro"), so both must agree.
        index: dict[tuple[str, str], set[str]] = {}
        for key, intent in self._phrases.items():
            for word in key if intent else ():
                if len(word) >= _MIN_TYPO_LEN:
                    index.setdefault((word[0], word[-1]), set()).add(word)
        return {edge: tuple(sorted(words)) for edge, words in index.items()}

    def _canonical(self, token: str) -> str:
        if token in self._known or len(token) < _MIN_TYPO_LEN:
            return token
        for word in self._typo_targets.get((token[0], token[-1]), ()):
            if _one_edit(token, word):
                return word
        return token

    def _labels(self, tokens: list[str]) -> Iterator[str]:
        """Greedy longest-phrase scan; each token belongs to at most one phrase."""
        i = 0
        while i < len(tokens):
            for size in self._lengths.get(tokens[i], ()):
                label = self._phrases.get(tuple(tokens[i:i + size]))
                if label is not None:
                    yield label
                    i += size
                    break
            else:
                i += 1

    def _has_cue(self, tokens: list[str]) -> bool:
        grams = {(t,) for t in tokens} | set(itertools.pairwise(tokens))
        return not self._cues.isdisjoint(grams)

    def _clause_intents(self, clause: str, asked: bool) -> set[str]:
        words = _REPEATS.sub(r"\1", _NON_WORD.sub(" ", clause)).split()
        tokens = [self._canonical(w) for w in words]
        found: set[str] = set()
        negated = False
        for label in self._labels(tokens):
            if negated and not asked and label in _NEGATABLE:
                label = "negacion"
            negated = negated or label == "negacion"
            found.add(label)
        found.discard(_NO_INTENT)
        if asked:
            return found - _ASKED_DROPS
        if "cancelacion" in found and self._has_cue(tokens):
            found.discard("cancelacion")
        return found

    def detect(self, text: str) -> str | None:
        """Return the highest-precedence intent found in ``text``, or None."""
        found: set[str] = set()
        for clause, asked in _clauses(text):
            found |= self._clause_intents(clause, asked)
        return next((intent for intent in _PRECEDENCE if intent in found), None)


_DEFAULT = Intents()


def detect(text: str) -> str | None:
    """Detect with the built-in vocabulary; see ``Intents.detect``."""
    return _DEFAULT.detect(text)
