"""The per-recipient fakes: each request's fault follows its own `To`, whatever the
order the requests of several recipients arrive in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.support.recipients import RecipientFakeTwilio, SeededFaultsFake

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "recipients-token"
ANA = "whatsapp:+5491155510001"
BETO = "whatsapp:+5491155510002"


def post(fake: RecipientFakeTwilio, to: str) -> requests.Response:
    return requests.post(
        f"{fake.base_url}/2010-04-01/Accounts/{SID}/Messages.json",
        data={"To": to, "From": "whatsapp:+14155238886", "Body": "hola"},
        auth=(SID, TOKEN), timeout=5,
    )


@pytest.fixture
def scripted() -> Iterator[RecipientFakeTwilio]:
    with RecipientFakeTwilio(auth_token=TOKEN) as fake:
        yield fake


@pytest.fixture
def seeded() -> Iterator[SeededFaultsFake]:
    with SeededFaultsFake(auth_token=TOKEN) as fake:
        yield fake


def test_script_for_faults_only_its_recipient_in_order(scripted: RecipientFakeTwilio) -> None:
    scripted.script_for(ANA, 500, 429)
    scripted.script_error_for(ANA, 400, 21610)
    answers = [(to, post(scripted, to)) for to in (BETO, ANA, BETO, ANA, ANA, ANA)]
    assert [(to, r.status_code) for to, r in answers] == [
        (BETO, 201), (ANA, 500), (BETO, 201), (ANA, 429), (ANA, 400), (ANA, 201)]
    assert [r.json()["code"] for _, r in answers if r.status_code != 201] == [
        20500, 20429, 21610]
    assert scripted.delivered_to(ANA) == ["hola"] and scripted.delivered_to(BETO) == ["hola"] * 2


def test_recipient_scripts_come_before_the_shared_ones(scripted: RecipientFakeTwilio) -> None:
    scripted.script(503)
    scripted.script_for(ANA, 201)
    assert post(scripted, ANA).status_code == 201
    assert post(scripted, BETO).status_code == 503
    assert post(scripted, ANA).status_code == 201


def test_seeded_faults_follow_each_recipients_own_sequence(seeded: SeededFaultsFake) -> None:
    seeded.recipient_fail_rates(error_500=0.4, error_429=0.2, slow=0.0, slow_seconds=0.0,
                                seed=7)
    ana = [status for status, _ in seeded.outcomes(ANA, 12)]
    beto = [status for status, _ in seeded.outcomes(BETO, 12)]
    assert ana != beto and {500, 429, 201} <= set(ana) | set(beto)
    # Interleaved differently from how the outcomes were drawn: each still gets its own.
    got: dict[str, list[int]] = {ANA: [], BETO: []}
    for to in [BETO, BETO, ANA] * 4 + [ANA] * 8:
        got[to].append(post(seeded, to).status_code)
    assert got[ANA] == ana and got[BETO] == beto[:8]
