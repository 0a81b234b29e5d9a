"""Spanish verb forms, enough to tell an order from a report.

Each form of a verb maps to a mood, so that "cancelalo", "cancélenlo", "cancelámelo" and
"no canceles" all read as an imperative of "cancelar" (voseo, tuteo, ustedeo alike),
while "cancelé" and "canceló" read as the past. Forms are folded (no accents), so the
past is told from the imperative by the accent the user typed, when there is one.

Moods: inf, imp (any person, and the subjunctive a "no" takes), imp1p ("cancelemos"),
pres1 ("cancelo"), ind (other present, future), past, ger. A "+me" marks an attached "me"
("dejame ver" is not "dejalo").
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ACCENTED", "EXCLUDED", "IRREGULAR", "conjugate", "past_by_accent"]

_ENCLITICS = ("", "me", "te", "se", "lo", "la", "los", "las", "le", "les", "nos", "melo",
              "mela", "melos", "melas", "telo", "tela", "selo", "sela", "noslo")

# Forms that are, far more often, other words: "para" (preposition), "corta" (short).
EXCLUDED = frozenset({"para", "corta", "corte", "corto", "prueba", "pruebas", "sale"})
# Excluded forms that still count when typed with their accent.
ACCENTED: Mapping[str, tuple[str, str]] = {
    "pará": ("parar", "imp"), "cortá": ("cortar", "imp"),
}

# Irregular verbs: mood -> bare forms (enclitics are added to inf, imp, imp1p and ger).
IRREGULAR: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "seguir": {
        "inf": ("seguir",), "imp": ("segui", "sigue", "siga", "sigan", "sigas"),
        "imp1p": ("sigamos",), "pres1": ("sigo",),
        "ind": ("seguis", "sigues", "siguen", "seguimos", "seguira", "seguiremos"),
        "past": ("siguio", "siguieron", "seguido", "seguiste"), "ger": ("siguiendo",),
    },
    "salir": {
        "inf": ("salir",), "imp": ("sal", "sali", "salga", "salgan", "salgas"),
        "imp1p": ("salgamos",), "pres1": ("salgo",),
        "ind": ("salis", "sales", "sale", "salen", "salimos"),
        "past": ("salio", "salieron", "salido", "saliste"), "ger": ("saliendo",),
    },
    "probar": {
        "inf": ("probar",), "imp": ("proba", "pruebe", "prueben", "pruebes"),
        "imp1p": ("probemos",), "pres1": ("pruebo",),
        "ind": ("probas", "prueban", "probamos", "probaria", "probare"),
        "past": ("probo", "probaste", "probaron", "probado", "probada"), "ger": ("probando",),
    },
}

_WITH_ENCLITICS = ("inf", "imp", "imp1p", "ger")


def conjugate(lemma: str, conjugation: str) -> dict[str, str]:
    """Folded form -> mood for one verb; `conjugation` is "ar", "er", "ir" or irregular."""
    table = IRREGULAR.get(conjugation) or _regular(lemma, conjugation)
    forms: dict[str, str] = {}
    for mood, bare in table.items():
        for form in bare:
            for clitic in _ENCLITICS if mood in _WITH_ENCLITICS else ("",):
                word = _attach(form, clitic)
                if word not in EXCLUDED:
                    forms.setdefault(word, mood + ("+me" if clitic.startswith("me") else ""))
    return forms


def past_by_accent(raw: str, conjugation: str) -> bool:
    """Whether the accent the user typed makes this form a past ("dejé", "paró", "salí")."""
    last = raw[-1:]
    return last in "éó" if conjugation in ("ar", "probar") else last == "í"


def _attach(form: str, clitic: str) -> str:
    # "cancelemos" + "lo" is "cancelémoslo", but + "nos" drops the s: "cancelémonos".
    if clitic == "nos" and form.endswith("mos"):
        return form[:-1] + clitic
    return form + clitic


def _regular(lemma: str, conjugation: str) -> dict[str, tuple[str, ...]]:
    stem = lemma[:-2]
    if conjugation == "ar":
        return _ar(stem, lemma)
    vowel = conjugation[0]  # "e" or "i": suspendés, escribís
    return {
        "inf": (lemma,), "imp": (stem + "e", stem + "a", stem + "an", stem + "as"),
        "imp1p": (stem + "amos",), "pres1": (stem + "o",),
        "ind": (stem + "es", stem + "en", stem + vowel + "s", stem + vowel + "mos",
                lemma + "a", lemma + "e", lemma + "an", lemma + "ia"),
        "past": (stem + "io", stem + "iste", stem + "ieron", stem + "ido", stem + "ida",
                 stem + "ia", stem + "ian"),
        "ger": (stem + "iendo",),
    }


def _ar(stem: str, lemma: str) -> dict[str, tuple[str, ...]]:
    # Before an e the stem keeps its sound: sacar -> saque, avanzar -> avance.
    soft = _soften(stem)
    return {
        "inf": (lemma,), "imp": (stem + "a", soft + "e", soft + "en", soft + "es"),
        "imp1p": (soft + "emos",), "pres1": (stem + "o",),
        "ind": (stem + "as", stem + "an", stem + "amos", lemma + "a", lemma + "e",
                lemma + "an", lemma + "ia", lemma + "emos"),
        "past": (stem + "aste", stem + "aron", stem + "ado", stem + "ada", stem + "ados",
                 stem + "adas", stem + "aba", stem + "aban", stem + "abamos"),
        "ger": (stem + "ando",),
    }


def _soften(stem: str) -> str:
    for hard, soft in (("c", "qu"), ("g", "gu"), ("z", "c")):
        if stem.endswith(hard):
            return stem[: -len(hard)] + soft
    return stem
