"""Intent detection on realistic rioplatense WhatsApp messages.

The CASES table is the contract: every row must hold, and the report test
prints precision/recall per intent over it.
"""

from __future__ import annotations

import pytest

from engine.core.intents import INTENTS, Intents, detect, normalize

CASES: list[tuple[str, str | None]] = [
    # saludo
    ("hola", "saludo"),
    ("Hola!", "saludo"),
    ("HOLA", "saludo"),
    ("holaaa", "saludo"),
    ("holis", "saludo"),
    ("holi 😊", "saludo"),
    ("buenas", "saludo"),
    ("Buenas!!", "saludo"),
    ("buen día", "saludo"),
    ("Buen dia!", "saludo"),
    ("buenos días", "saludo"),
    ("buenas tardes", "saludo"),
    ("buenas noches", "saludo"),
    ("qué tal", "saludo"),
    ("hola, qué tal?", "saludo"),
    ("hola como andas", "saludo"),
    ("¿cómo estás?", "saludo"),
    ("que onda", "saludo"),
    ("hey", "saludo"),
    ("hola buenas", "saludo"),
    ("¿hola?", "saludo"),
    ("Hola, soy Juan Pérez", "saludo"),
    # afirmacion
    ("si", "afirmacion"),
    ("sí", "afirmacion"),
    ("¡¡Sí!!", "afirmacion"),
    ("SI 👍", "afirmacion"),
    ("siii", "afirmacion"),
    ("sii dale", "afirmacion"),
    ("dale", "afirmacion"),
    ("daleee", "afirmacion"),
    ("Dale dale", "afirmacion"),
    ("de una", "afirmacion"),
    ("de una!", "afirmacion"),
    ("obvio", "afirmacion"),
    ("obvio que sí", "afirmacion"),
    ("claro", "afirmacion"),
    ("claro que si", "afirmacion"),
    ("bueno", "afirmacion"),
    ("bueno dale", "afirmacion"),
    ("ok", "afirmacion"),
    ("OK.", "afirmacion"),
    ("okk", "afirmacion"),
    ("okey", "afirmacion"),
    ("re si", "afirmacion"),
    ("joya", "afirmacion"),
    ("joyaa 🙌", "afirmacion"),
    ("genial", "afirmacion"),
    ("perfecto", "afirmacion"),
    ("listo", "afirmacion"),
    ("por supuesto", "afirmacion"),
    ("sip", "afirmacion"),
    ("sisi", "afirmacion"),
    ("si si", "afirmacion"),
    ("de acuerdo", "afirmacion"),
    ("me parece bien", "afirmacion"),
    ("buenísimo", "afirmacion"),
    ("bárbaro", "afirmacion"),
    ("más vale", "afirmacion"),
    ("👍", "afirmacion"),
    ("no hay problema", "afirmacion"),
    ("sí, pero ¿cuánto sale?", "afirmacion"),
    ("hola, sí", "afirmacion"),
    ("perfeto", "afirmacion"),
    # negacion
    ("no", "negacion"),
    ("No.", "negacion"),
    ("NO!", "negacion"),
    ("nop", "negacion"),
    ("nope", "negacion"),
    ("noo", "negacion"),
    ("nooo", "negacion"),
    ("para nada", "negacion"),
    ("ni ahí", "negacion"),
    ("ni ahi", "negacion"),
    ("no gracias", "negacion"),
    ("No, gracias", "negacion"),
    ("no me interesa", "negacion"),
    ("nah", "negacion"),
    ("nunca", "negacion"),
    ("ni en pedo", "negacion"),
    ("no quiero", "negacion"),
    ("claro que no", "negacion"),
    ("obvio que no", "negacion"),
    ("mmm no", "negacion"),
    ("creo que no", "negacion"),
    ("la verdad que no", "negacion"),
    ("no por ahora", "negacion"),
    ("ahora no", "negacion"),
    ("no quiero la prueba", "negacion"),
    ("no, no quiero probar", "negacion"),
    ("no quiero cancelar", "negacion"),
    ("no cancelen nada", "negacion"),
    ("hola, no gracias", "negacion"),
    ("ni loca", "negacion"),
    # prueba
    ("prueba", "prueba"),
    ("probar", "prueba"),
    ("prueba gratis", "prueba"),
    ("quiero la prueba", "prueba"),
    ("quiero probar", "prueba"),
    ("demo", "prueba"),
    ("free trial", "prueba"),
    ("trial", "prueba"),
    ("periodo de prueba", "prueba"),
    ("período de prueba", "prueba"),
    ("sí, quiero la prueba", "prueba"),
    ("hola, quiero probar", "prueba"),
    ("quiero la prueba gratis!", "prueba"),
    ("prueva", "prueba"),
    ("quiero probarlo", "prueba"),
    ("me gustaría probar", "prueba"),
    ("puedo probar?", "prueba"),
    ("¿tienen prueba gratis?", "prueba"),
    ("¿no tienen prueba gratis?", "prueba"),
    ("quiero la demo", "prueba"),
    ("dale, quiero probar", "prueba"),
    ("quiero probar, ¿puedo cancelar después?", "prueba"),
    ("¿cómo es la prueba?", "prueba"),
    ("hasta cuándo dura la prueba?", "prueba"),
    ("una pruebita", "prueba"),
    ("versión de prueba", "prueba"),
    ("probarrr", "prueba"),
    ("Hola! Soy Juan, quiero probar el servicio", "prueba"),
    ("hola, ¿se puede probar gratis?", "prueba"),
    ("buen día, quería la prueba gratis", "prueba"),
    # despedida
    ("chau", "despedida"),
    ("chauuu", "despedida"),
    ("chao", "despedida"),
    ("adiós", "despedida"),
    ("adiosss", "despedida"),
    ("Adiós 👋", "despedida"),
    ("hasta luego", "despedida"),
    ("hasta luego!", "despedida"),
    ("nos vemos", "despedida"),
    ("hasta mañana", "despedida"),
    ("gracias, adiós", "despedida"),
    ("me voy", "despedida"),
    ("bueno, me voy", "despedida"),
    ("no, gracias, chau", "despedida"),
    ("bye", "despedida"),
    ("chau gracias", "despedida"),
    ("listo, chau", "despedida"),
    ("hasta pronto", "despedida"),
    ("hasta la próxima", "despedida"),
    ("gracias hasta luego", "despedida"),
    ("chaucito", "despedida"),
    ("dale, nos hablamos", "despedida"),
    ("grasias, chau", "despedida"),
    ("muchas gracias, nos vemos!", "despedida"),
    # cancelacion
    ("cancelar", "cancelacion"),
    ("Cancelar.", "cancelacion"),
    ("cancelá", "cancelacion"),
    ("CANCELAR!!!", "cancelacion"),
    ("quiero cancelar", "cancelacion"),
    ("canselar", "cancelacion"),
    ("cancelr", "cancelacion"),
    ("cancleá", "cancelacion"),
    ("basta", "cancelacion"),
    ("basta!!", "cancelacion"),
    ("¡Basta!", "cancelacion"),
    ("stop", "cancelacion"),
    ("STOP", "cancelacion"),
    ("no quiero seguir", "cancelacion"),
    ("No quiero seguir más", "cancelacion"),
    ("dejalo", "cancelacion"),
    ("déjalo así", "cancelacion"),
    ("salir", "cancelacion"),
    ("quiero salir", "cancelacion"),
    ("cancelalo", "cancelacion"),
    ("cancelen todo por favor", "cancelacion"),
    ("quiero darme de baja", "cancelacion"),
    ("me quiero dar de baja", "cancelacion"),
    ("no me escriban más", "cancelacion"),
    ("dejá de escribirme", "cancelacion"),
    ("parar", "cancelacion"),
    ("no quiero más", "cancelacion"),
    ("cancelá la prueba", "cancelacion"),
    ("hola, quiero cancelar", "cancelacion"),
    ("no quiero seguir, chau", "cancelacion"),
    ("no, cancelar", "cancelacion"),
    ("quiero la cancelación", "cancelacion"),
    ("unsubscribe", "cancelacion"),
    ("quiero cancelar, ¿se puede?", "cancelacion"),
    # hard negatives: nothing to detect
    ("Chaulet", None),
    ("soy de Chaulet", None),
    ("para qué sirve?", None),
    ("para que sirve esto", None),
    ("sino", None),
    ("sino te llamo mañana", None),
    ("nombre", None),
    ("mi nombre es Juan", None),
    ("Juan Pérez", None),
    ("juan@mail.com", None),
    ("mi mail es juan@mail.com", None),
    ("¿puedo cancelar después?", None),
    ("como cancelo despues?", None),
    ("se puede cancelar en cualquier momento?", None),
    ("¿Y si no me gusta?", None),
    ("si no me gusta lo cancelo", None),
    ("cancelo cuando quiera?", None),
    ("cancelación de mi cuenta de gas?", None),
    ("gracias", None),
    ("Gracias!!", None),
    ("muchas gracias", None),
    ("grasias", None),
    ("Candela", None),
    ("soy Candela", None),
    ("Clara", None),
    ("me pasás la lista de precios", None),
    ("quiero pagar con tarjeta", None),
    ("vivo en Buenos Aires", None),
    ("no sé", None),
    ("no sé si quiero", None),
    ("no entiendo", None),
    ("¿cuánto sale?", None),
    ("¿cuánto cuesta por mes?", None),
    ("me voy a anotar", None),
    ("ok?", None),
    ("¿sí?", None),
    ("123456", None),
    ("", None),
    ("   ", None),
    ("😂😂", None),
    ("jajaja", None),
    ("?", None),
    ("pasta", None),
    ("bastante bien", None),
    ("lo había dejado", None),
    ("nos vimos ayer", None),
    ("Paraná", None),
    ("para", None),
    ("no se puede?", None),
    ("hasta cuándo?", None),
    ("Holanda", None),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_detect_table(text: str, expected: str | None) -> None:
    assert detect(text) == expected


def test_table_is_big_and_covers_every_intent() -> None:
    assert len(CASES) >= 150
    assert {expected for _, expected in CASES} == {*INTENTS, None}


def _precision_recall() -> dict[str, tuple[float, float, int]]:
    got = [(expected, detect(text)) for text, expected in CASES]
    report: dict[str, tuple[float, float, int]] = {}
    for intent in INTENTS:
        tp = sum(1 for e, g in got if e == intent and g == intent)
        predicted = sum(1 for _, g in got if g == intent)
        support = sum(1 for e, _ in got if e == intent)
        precision = tp / predicted if predicted else 1.0
        recall = tp / support if support else 1.0
        report[intent] = (precision, recall, support)
    return report


def test_precision_recall_report(capsys: pytest.CaptureFixture[str]) -> None:
    report = _precision_recall()
    lines = [f"{'intent':<12} {'P':>5} {'R':>5} {'n':>4}"]
    lines += [f"{i:<12} {p:>5.2f} {r:>5.2f} {n:>4}" for i, (p, r, n) in report.items()]
    with capsys.disabled():
        print(f"\nintent P/R over {len(CASES)} cases\n" + "\n".join(lines))
    assert all(p == 1.0 and r == 1.0 for p, r, _ in report.values())


def test_extra_extends_vocabulary() -> None:
    custom = Intents(extra={"afirmacion": ["de diez"], "despedida": ("nos re vimos",)})
    assert detect("de diez") is None
    assert custom.detect("¡De diez!") == "afirmacion"
    assert custom.detect("nos re vimos") == "despedida"
    assert custom.detect("hola") == "saludo"


def test_extra_accepts_a_single_string_as_one_phrase() -> None:
    custom = Intents(extra={"afirmacion": "excelente"})
    assert custom.detect("excelente") == "afirmacion"
    assert custom.detect("exelente") == "afirmacion"
    assert custom.detect("e") is None


def test_extra_stronger_intent_wins_a_shared_phrase() -> None:
    assert Intents(extra={"cancelacion": ["chau"]}).detect("chau") == "cancelacion"


def test_extra_unknown_intent_raises() -> None:
    with pytest.raises(ValueError, match=r"'compra'.*saludo.*cancelacion"):
        Intents(extra={"compra": ["quiero comprar"]})


def test_extra_empty_phrase_raises() -> None:
    with pytest.raises(ValueError, match="empty phrase"):
        Intents(extra={"afirmacion": ["!!!"]})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("¡¡Sí!!", "si"),
        ("SI 👍", "si"),
        ("Adiós, mañana", "adios manana"),
        ("  Qué   tal?\n¿Cómo andás? ", "que tal como andas"),
        ("juan@mail.com", "juan mail com"),
        ("PINGÜINO_ñandú", "pinguino nandu"),
        ("😂🙌", ""),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected
