"""engine.channels.twilio.TwilioSender through the real twilio-python, against the fake."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.channels.twilio import SendFailure, TwilioSender
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
