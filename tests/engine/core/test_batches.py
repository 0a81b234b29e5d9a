"""Several messages in one transaction (group commit): each succeeds or fails alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.core.flow import BASE_TEXTS
from engine.core.ports import Inbound
from engine.wiring import Wiring
from tests.support.paths import FLOWS
from tests.support.wiring import rows

ASK_NAME = "¡Genial! Para armar tu cuenta, ¿cómo te llamás?"


def _flows_that_break_on(tmp_path: Path, text: str) -> Path:
    """The real trial flow, with a step that raises on one text (a bug in a flow)."""
    folder = tmp_path / "flows"
    folder.mkdir()
    source = (FLOWS / "trial.py").read_text()
    hook = '        if turn.intent in ("afirmacion", "prueba"):\n'
    assert hook in source
    bug = f'        if turn.text == {text!r}:\n            raise RuntimeError("boom")\n'
    (folder / "trial.py").write_text(source.replace(hook, bug + hook, 1))
    return folder


def _inbound(phone: str, text: str, sid: str) -> Inbound:
    return Inbound(channel="whatsapp", phone=phone, text=text, message_id=sid)


def _state(wiring: Wiring, phone: str) -> tuple[str, str | None]:
    row = rows(wiring, "SELECT state, close_reason FROM sessions WHERE phone = :p "
               "ORDER BY id DESC LIMIT 1", p=phone)[0]
    return row["state"], row["close_reason"]


def test_a_failing_step_and_a_duplicate_do_not_undo_the_rest_of_the_batch(
    tmp_path: Path, make_wiring: Callable[..., Wiring]
) -> None:
    wiring = make_wiring(FLOWS_DIR=str(_flows_that_break_on(tmp_path, "explota")))
    engine = wiring.conversations
    a, b, c = "+5491100000001", "+5491100000002", "+5491100000003"
    for n, phone in enumerate((a, b, c)):
        engine.handle(_inbound(phone, "hola", f"SMhola{n}"))

    replies = engine.handle_many([
        _inbound(a, "sí", "SMa1"),
        _inbound(b, "explota", "SMb1"),
        _inbound(c, "sí", "SMc1"),
        _inbound(a, "sí", "SMa1"),  # Twilio retried it: already in this very batch
        _inbound(c, "hola", "SMhola2"),  # and one retried from long before
    ])

    bodies = [[o.body for o in outbound] for outbound in replies]
    assert bodies[0] == [ASK_NAME] and bodies[2] == [ASK_NAME]
    assert bodies[1] == [BASE_TEXTS["apology"]]
    assert bodies[3] == [] and bodies[4] == []
    assert _state(wiring, a) == ("trial_request", None)
    assert _state(wiring, b) == ("closed", "error")
    assert _state(wiring, c) == ("trial_request", None)
    inbound_sids = [r["twilio_sid"] for r in rows(
        wiring, "SELECT twilio_sid FROM messages WHERE direction = 'in' ORDER BY id")]
    assert inbound_sids == ["SMhola0", "SMhola1", "SMhola2", "SMa1", "SMb1", "SMc1"]


def test_a_batch_without_failures_commits_every_message(
    make_wiring: Callable[..., Wiring]
) -> None:
    wiring = make_wiring()
    phones = [f"+54911000001{n:02d}" for n in range(20)]
    wiring.conversations.handle_many([_inbound(p, "hola", f"SM{p[1:]}") for p in phones])
    replies = wiring.conversations.handle_many([_inbound(p, "sí", f"SMsi{p[1:]}") for p in phones])
    assert [[o.body for o in r] for r in replies] == [[ASK_NAME]] * 20
    assert {_state(wiring, p) for p in phones} == {("trial_request", None)}
    assert len(rows(wiring, "SELECT id FROM messages WHERE direction = 'out'")) == 40
