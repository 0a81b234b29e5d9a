"""What a message means depends on what the bot asked: the trial flow, end to end.

The real trial flow, the real engine and a real SQLite file; assertions read what the user
received and what ops see in `sessions`. The last tests plug a detector of their own in
through INTENT_DETECTOR, as a deployment would plug in an NLU service.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import pytest

from engine.core.errors import ConfigError
from engine.core.ports import Inbound
from engine.wiring import Wiring
from tests.support.wiring import rows

PHONE = "+5491144443333"
ASK_NAME = "¡Genial! Para armar tu cuenta, ¿cómo te llamás?"
OFFER_AGAIN = "¿Querés la prueba gratis? Respondé *sí* para empezar o *chau* para salir."


class Chat:
    """Sends texts as one phone; `session()` is the row ops would read."""

    def __init__(self, wiring: Wiring) -> None:
        self.wiring = wiring
        self.sent = 0

    def send(self, text: str) -> list[str]:
        self.sent += 1
        inbound = Inbound(channel="whatsapp", phone=PHONE, text=text,
                          message_id=f"SMctx{self.sent:06d}")
        return [o.body for o in self.wiring.conversations.handle(inbound)]

    def session(self) -> dict[str, object]:
        return rows(self.wiring, "SELECT * FROM sessions ORDER BY id DESC LIMIT 1")[0]


def test_a_name_with_a_goodbye_in_it_is_taken_as_the_name(wiring: Wiring) -> None:
    chat = Chat(wiring)
    chat.send("hola")
    assert chat.send("sí") == [ASK_NAME]
    replies = chat.send("adiós pérez")  # typed in lower case, so only the step tells
    assert replies == ["Gracias, Adiós Pérez. Ahora pasame tu email, así te llega todo ahí "
                       "también."]
    session = chat.session()
    assert (session["state"], session["closed_at"]) == ("trial_request", None)


def test_an_email_with_a_goodbye_in_it_is_taken_as_the_email(wiring: Wiring) -> None:
    chat = Chat(wiring)
    for text in ("hola", "sí", "María Chau"):
        chat.send(text)
    delivered = chat.send("chau.maria@gmail.com")
    assert "Usuario: maria" in delivered[0]
    session = chat.session()
    assert (session["state"], session["close_reason"]) == ("closed", "credentials_delivered")
    assert session["context"] == '{"name":"María Chau","email":"chau.maria@gmail.com"}'


def test_a_plain_goodbye_when_asked_for_a_name_still_closes(wiring: Wiring) -> None:
    chat = Chat(wiring)
    chat.send("hola")
    chat.send("sí")
    assert chat.send("chau") == ["¡Gracias por escribirnos! Cuando quieras, acá estamos. 👋"]
    session = chat.session()
    assert (session["state"], session["close_reason"]) == ("closed", "goodbye")


def test_a_no_that_stops_cancels(wiring: Wiring) -> None:
    chat = Chat(wiring)
    chat.send("hola")
    chat.send("sí")
    replies = chat.send("ya no me interesa")
    assert replies == ["Listo, cancelamos todo. Si cambiás de idea, escribinos cuando quieras."]
    session = chat.session()
    assert (session["state"], session["close_reason"]) == ("cancelled", "cancelled")


def test_a_question_with_a_goodbye_in_it_does_not_close(wiring: Wiring) -> None:
    chat = Chat(wiring)
    chat.send("hola")
    assert chat.send("¿hasta mañana tengo tiempo?") == [OFFER_AGAIN]
    session = chat.session()
    assert (session["state"], session["closed_at"]) == ("greeting", None)


# -- the port: a detector of one's own ---------------------------------------------------


class ShoutedWords:
    """Reads only shouted Spanish; records what each step said it expected."""

    expected: ClassVar[list[str | None]] = []

    def detect(self, text: str, *, expects: str | None = None) -> str | None:
        ShoutedWords.expected.append(expects)
        return {"SI": "afirmacion", "BASTA": "cancelacion"}.get(text)


class NoDetect:
    """Not a detector: it has no detect method."""


def test_intent_detector_setting_replaces_the_rules(
    make_wiring: Callable[..., Wiring],
) -> None:
    ShoutedWords.expected.clear()
    chat = Chat(make_wiring(INTENT_DETECTOR=f"{__name__}:ShoutedWords"))
    chat.send("hola")
    assert chat.send("sí") == [OFFER_AGAIN]  # the built-in rules would have read a yes
    assert chat.send("SI") == [ASK_NAME]
    chat.send("Ana")
    chat.send("BASTA")
    session = chat.session()
    assert (session["state"], session["close_reason"]) == ("cancelled", "cancelled")
    assert ShoutedWords.expected == [None, None, None, "name", "email"]


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("tests.engine.no_such_module:Detector", "an importable module:Class"),
        (f"{__name__}:NoDetect", r"detect\(text, \*, expects=None\)"),
    ],
)
def test_intent_detector_that_cannot_detect_stops_start_up(
    make_wiring: Callable[..., Wiring], value: str, hint: str
) -> None:
    with pytest.raises(ConfigError, match=rf"INTENT_DETECTOR has value '{value}'.*{hint}"):
        make_wiring(INTENT_DETECTOR=value)
