"""Quick replies and lists end to end: a real `tertulia serve`, real twilio-python and
the loopback fake of Twilio's Messages API.

A text with choices goes as the Content API template TWILIO_CONTENT_SIDS names for it
(ContentSid plus ContentVariables, no Body), or as numbered lines; a tap comes back as
its words (Body, ButtonText) and its id (ButtonPayload), and the step reads both.
"""

from __future__ import annotations

import json

import pytest

from tests.support.harness import ServerFactory, wait_until, whatsapp
from tests.support.recipients import RecipientFakeTwilio

pytestmark = pytest.mark.e2e

LUCIA = "+5491155502001"
PABLO = "+5491155502002"
GREETING_SID = "HX" + "0a1b2c3d" * 4
GREETING = ("¡Hola! 💈 Soy el asistente de turnos de Barbería Tertulia. "
            "¿Qué servicio querés?")


def test_a_template_carries_the_choices_and_a_tap_reaches_the_step(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"DEFAULT_FLOW": "booking",
                                 "TWILIO_CONTENT_SIDS": f"booking.greeting={GREETING_SID}"})

    server.send(LUCIA, "hola")
    [greeting] = fake.wait_for(1)
    assert greeting.form["ContentSid"] == GREETING_SID
    assert json.loads(greeting.form["ContentVariables"]) == {
        "1": GREETING, "2": "Corte", "3": "Barba", "4": "Color"}
    assert "Body" not in greeting.form

    server.send(LUCIA, "Barba", ButtonText="Barba", ButtonPayload="barba", MessageType="button")
    wait_until(lambda: len(fake.delivered_to(whatsapp(LUCIA))) == 2, what="the day question")
    # No template for ask_day: its choices go as numbered lines, and a number answers.
    assert fake.delivered_to(whatsapp(LUCIA))[1] == (
        "Buenísimo: Barba. ¿Qué día te queda bien?\n\n"
        "1. Lunes 10:00\n2. Miércoles 15:00\n3. Viernes 18:00")
    assert "ContentSid" not in fake.delivered[1].form

    server.send(LUCIA, "3")
    wait_until(lambda: len(fake.delivered_to(whatsapp(LUCIA))) == 3, what="the confirmation")
    assert fake.delivered_to(whatsapp(LUCIA))[2].startswith(
        "¿Confirmamos Barba el Viernes 18:00?\n\n1. Sí, confirmar")
    rows = server.rows("SELECT text_key, choices FROM messages WHERE direction = 'out' "
                       "ORDER BY id")
    assert [r["text_key"] for r in rows] == ["greeting", "ask_day", "confirm"]
    assert json.loads(rows[2]["choices"]) == [{"id": "si", "title": "Sí, confirmar"},
                                              {"id": "no", "title": "No, cambiar"}]


def test_a_tapped_no_gracias_declines_the_trial(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory()
    server.send(PABLO, "hola")
    fake.wait_for(1)

    server.send(PABLO, "No, gracias", ButtonText="No, gracias", ButtonPayload="btn_decline",
                MessageType="button")

    wait_until(lambda: len(fake.delivered_to(whatsapp(PABLO))) == 2, what="the answer")
    assert fake.delivered_to(whatsapp(PABLO))[1].startswith("¡Dale, no hay problema!")
    [session] = server.rows("SELECT state, close_reason FROM sessions")
    assert session == {"state": "closed", "close_reason": "goodbye"}
    assert [r["body"] for r in server.rows(
        "SELECT body FROM messages WHERE direction = 'in' ORDER BY id")] == [
        "hola", "No, gracias"]


def test_dry_run_logs_the_choices_as_numbered_lines(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory(credentials=False, env={"DEFAULT_FLOW": "booking"})

    server.send(LUCIA, "hola")

    wait_until(lambda: server.rows("SELECT status FROM messages WHERE direction = 'out' "
                                   "AND status = 'dry_run'"), what="the dry run")
    assert f"{GREETING}\n\n1. Corte\n2. Barba\n3. Color" in server.log_text()
    assert fake.requests == []
