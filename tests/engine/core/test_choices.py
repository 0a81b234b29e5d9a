"""Choices: how a reply picks one, what a flow may declare, and what the session keeps
while it stays in the state that offered them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.core.choices import Choice, numbered, pick
from engine.core.clock import FakeClock
from engine.core.ports import Inbound
from engine.flowfiles import check_files
from persistence.memory import MemoryStore
from tests.support.chat import Chat, conversations_on

DAYS = (Choice("lun", "Lunes 10:00"), Choice("mie", "Miércoles 15:00"),
        Choice("no", "No, gracias"))


@pytest.mark.parametrize(("text", "choice_id", "picked"), [
    ("No, gracias", "no", "no"),          # a tap: its id
    ("lo que sea", "mie", "mie"),         # the id wins over the words
    ("no gracias!", None, "no"),          # the words, without case, accents or commas
    ("MIERCOLES 15:00", None, "mie"),
    ("miércoles", None, "mie"),           # the first words of only one title
    ("2", None, "mie"),                   # its number
    (" 3. ", None, "no"),
    ("4", None, None),                    # no such number
    ("0", None, None),
    ("el martes", None, None),
    ("x", "btn_stale", None),             # a tap on a button no longer offered
])
def test_a_reply_picks_by_id_words_or_number(
    text: str, choice_id: str | None, picked: str | None
) -> None:
    choice = pick(DAYS, text=text, choice_id=choice_id)

    assert (choice.id if choice else None) == picked


def test_nothing_is_picked_when_nothing_is_offered() -> None:
    assert pick((), text="1", choice_id="lun") is None


def test_the_plain_text_form_numbers_the_titles() -> None:
    assert numbered("¿Qué día?", DAYS[:2]) == "¿Qué día?\n\n1. Lunes 10:00\n2. Miércoles 15:00"
    assert numbered("Hola", ()) == "Hola"


def test_choices_last_while_the_state_lasts_and_a_number_is_plain_text_elsewhere() -> None:
    store = MemoryStore()
    chat = Chat(conversations_on(store, FakeClock()))
    chat.send("hola")  # the trial flow offers no choices: "2" stays "2"
    assert chat.send("2") == [
        "¿Querés la prueba gratis? Respondé *sí* para empezar o *chau* para salir."]
    [trial] = store.sessions()
    assert trial.choices == ()

    booking = Chat(chat.conversations, phone="+5491100000777")
    [greeting] = booking.conversations.handle(Inbound(
        channel="whatsapp", phone=booking.phone, text="hola", message_id="b1", flow="booking"))
    assert [c.title for c in greeting.choices] == ["Corte", "Barba", "Color"]
    assert greeting.key == "greeting"
    assert booking.send("no entiendo") == ["¿Qué servicio querés? Elegí una opción."]
    assert [c.id for c in store.sessions()[-1].choices] == ["corte", "barba", "color"]
    assert booking.send("2") == ["Buenísimo: Barba. ¿Qué día te queda bien?"]
    assert [c.id for c in store.sessions()[-1].choices] == ["lun", "mie", "vie"]


BAD_CHOICES = '''
from engine import Decision, Flow, Turn, step

class Bad(Flow):
    name = "bad"
    states = ["ask", "closed", "timeout", "cancelled"]
    initial = "ask"
    texts = {"greeting": "¿Sí o no?"}
    choices = {
        "greeting": [("si", "Sí"), ("si", "Sí, claro"),
                     ("x", "Un título demasiado largo para WhatsApp")],
        "missing": ["Uno"],
        "nothing": [],
    }
    transitions = [{"trigger": "done", "source": "ask", "dest": "closed", "reason": "goodbye"}]

    @step("ask")
    def ask(self, turn: Turn) -> Decision:
        return turn.move("done")
'''


def test_flows_check_names_each_bad_choice(tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_text(textwrap.dedent(BAD_CHOICES), encoding="utf-8")

    problems = [str(p) for p in check_files([path])]

    assert problems == [
        f"{path}: choices['greeting']: id 'si' is offered twice. Fix: give each choice its "
        "own id",
        f"{path}: choices['greeting']: title 'Un título demasiado largo para WhatsApp' is longer "
        "than 24 characters. Fix: shorten it; WhatsApp cuts longer button and list titles",
        f"{path}: choices['missing']: text 'missing' is referenced but missing. Fix: add "
        "'missing' to texts",
        f"{path}: choices['nothing']: text 'nothing' is referenced but missing. Fix: add "
        "'nothing' to texts",
        f"{path}: choices['nothing']: it is not a list of choices. Fix: list them: "
        "['Sí', 'No'] or [('si', 'Sí'), ('no', 'No')]",
    ]


@pytest.mark.parametrize(("words", "payload", "reply"), [
    ("No, gracias", "si", "¡Dale, no hay problema!"),   # the words first
    ("Opción 1", "si", "¡Genial! Para armar tu cuenta"),  # the id when the words say nothing
    ("No, gracias", "btn_decline", "¡Dale, no hay problema!"),
])
def test_a_tap_on_a_button_the_flow_did_not_offer_is_read_by_its_words_then_its_id(
    words: str, payload: str, reply: str
) -> None:
    store = MemoryStore()
    conversations = conversations_on(store, FakeClock())
    chat = Chat(conversations)
    chat.send("hola")

    [answer] = conversations.handle(Inbound(channel="whatsapp", phone=chat.phone, text=words,
                                            message_id="tap-1", choice=payload))

    assert answer.body.startswith(reply)
