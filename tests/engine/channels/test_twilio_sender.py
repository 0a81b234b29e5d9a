"""engine.channels.twilio.TwilioSender through the real twilio-python, against the fake."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from engine.channels.twilio import Form, SendFailure, TwilioSender, parse_inbound
from engine.core.choices import Choice
from tests.support.twilio_fake import FakeTwilio

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "secret-token"
FROM = "whatsapp:+14155238886"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(auth_token=TOKEN) as f:
        yield f


@pytest.fixture
def sender(fake: FakeTwilio) -> Iterator[TwilioSender]:
    s = TwilioSender(account_sid=SID, auth_token=TOKEN, sender=FROM, api_base_url=fake.base_url,
                     timeout=5.0, status_callback=None)
    yield s
    s.close()


def test_pace_is_called_once_per_send_just_before_the_request_reaches_twilio(
    fake: FakeTwilio, sender: TwilioSender
) -> None:
    seen_by_fake_when_paced: list[int] = []

    def pace() -> None:
        seen_by_fake_when_paced.append(len(fake.requests))

    for n in range(3):
        result = sender.send("+34600000001", f"hola {n}", pace)
        assert result.sid.startswith("SM")
    assert seen_by_fake_when_paced == [0, 1, 2]
    assert [r.body for r in fake.delivered] == ["hola 0", "hola 1", "hola 2"]


def test_a_refused_send_still_took_its_slot_and_says_whether_to_retry(
    fake: FakeTwilio, sender: TwilioSender
) -> None:
    paced: list[None] = []
    fake.script(429, 400)
    with pytest.raises(SendFailure) as busy:
        sender.send("+34600000001", "hola", lambda: paced.append(None))
    with pytest.raises(SendFailure) as refused:
        sender.send("+34600000001", "hola", lambda: paced.append(None))
    assert (busy.value.retryable, busy.value.status) == (True, 429)
    assert (refused.value.retryable, refused.value.status) == (False, 400)
    assert len(paced) == 2


# -- choices -------------------------------------------------------------------------------

DAYS = (Choice("lun", "Lunes 10:00"), Choice("mie", "Miércoles 15:00"))
TEMPLATE = "HX" + "0123456789abcdef" * 2


def test_a_text_with_a_template_goes_as_content_sid_and_variables(fake: FakeTwilio) -> None:
    sender = TwilioSender(account_sid=SID, auth_token=TOKEN, sender=FROM,
                          api_base_url=fake.base_url, timeout=5.0, status_callback=None,
                          content_sids={"booking.ask_day": TEMPLATE})
    try:
        sender.send("+34600000001", "¿Qué día?", choices=DAYS, key="booking.ask_day")
        sender.send("+34600000001", "¿Confirmamos?", choices=DAYS, key="booking.confirm")
    finally:
        sender.close()

    templated, plain = fake.delivered
    assert templated.form["ContentSid"] == TEMPLATE
    assert json.loads(templated.form["ContentVariables"]) == {
        "1": "¿Qué día?", "2": "Lunes 10:00", "3": "Miércoles 15:00"}
    assert "Body" not in templated.form
    assert plain.body == "¿Confirmamos?\n\n1. Lunes 10:00\n2. Miércoles 15:00"
    assert "ContentSid" not in plain.form


def test_a_tap_or_a_list_reply_is_read_as_its_words_and_its_id() -> None:
    base = [("From", "whatsapp:+5491155500001"), ("MessageSid", "SM" + "1" * 32)]

    button = parse_inbound(Form([*base, ("Body", "No, gracias"), ("ButtonText", "No, gracias"),
                                 ("ButtonPayload", "btn_decline")]))
    listed = parse_inbound(Form([*base, ("Body", ""), ("ListTitle", "Miércoles 15:00"),
                                 ("ListId", "mie")]))
    typed = parse_inbound(Form([*base, ("Body", "2")]))

    assert (button.text, button.choice, button.kind) == ("No, gracias", "btn_decline", "text")
    assert (listed.text, listed.choice, listed.kind) == ("Miércoles 15:00", "mie", "text")
    assert (typed.text, typed.choice) == ("2", None)
