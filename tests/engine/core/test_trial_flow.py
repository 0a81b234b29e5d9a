"""The trial flow end to end through the real store, as a WhatsApp user lives it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.core.clock import FakeClock
from engine.core.ports import CredentialRequest, Credentials, Inbound
from engine.wiring import Wiring
from tests.support.wiring import rows

PHONE = "+5491123456789"


class Conversation:
    """Sends texts as one phone and keeps what the user received."""

    def __init__(self, wiring: Wiring, phone: str = PHONE, channel: str = "whatsapp"):
        self.wiring, self.phone, self.channel = wiring, phone, channel
        self.counter = 0

    def send(self, text: str, **kw: object) -> list[str]:
        self.counter += 1
        inbound = Inbound(channel=self.channel, phone=self.phone, text=text,
                          message_id=f"SM{self.phone[1:]}{self.counter:06d}", **kw)  # type: ignore[arg-type]
        return [o.body for o in self.wiring.conversations.handle(inbound)]

    def session(self) -> dict[str, object]:
        return rows(self.wiring, "SELECT * FROM sessions WHERE phone = :p ORDER BY id DESC "
                    "LIMIT 1", p=self.phone)[0]


def test_happy_path_delivers_credentials_and_closes(wiring: Wiring) -> None:
    chat = Conversation(wiring)
    greeting = chat.send("hola", profile_name="Lucía")
    assert len(greeting) == 1 and "¡Hola, Lucía!" in greeting[0]
    assert "probar gratis" in greeting[0]
    assert chat.session()["state"] == "greeting"

    assert chat.send("sí, dale") == ["¡Genial! Para armar tu cuenta, ¿cómo te llamás?"]
    assert chat.session()["state"] == "trial_request"
    assert "Lucía Gómez" in chat.send("lucía gómez")[0]
    delivered = chat.send("Lucia.Gomez@Example.com")

    assert len(delivered) == 2
    creds, closing = delivered
    assert "Usuario: lucia" in creds and "Contraseña: " in creds and "Vence:" in creds
    assert "https://" in creds and "Cerramos" in closing
    session = chat.session()
    assert session["state"] == "closed" and session["close_reason"] == "credentials_delivered"
    assert session["closed_at"] is not None
    assert session["context"] == '{"name":"Lucía Gómez","email":"lucia.gomez@example.com"}'
    trial = rows(wiring, "SELECT * FROM trials")
    assert len(trial) == 1 and trial[0]["phone"] == PHONE
    assert trial[0]["username"].startswith("lucia")
    events = rows(wiring, "SELECT from_state, to_state, trigger FROM session_events "
                  "ORDER BY id")
    assert [(e["from_state"], e["to_state"], e["trigger"]) for e in events] == [
        (None, "greeting", "start"),
        ("greeting", "trial_request", "accept"),
        ("trial_request", "trial_request", "take_name"),
        ("trial_request", "credentials", "take_email"),
        ("credentials", "closed", "deliver"),
    ]
    inbound = rows(wiring, "SELECT body FROM messages WHERE direction = 'in' ORDER BY id")
    assert [m["body"] for m in inbound] == ["hola", "sí, dale", "lucía gómez",
                                            "Lucia.Gomez@Example.com"]


def test_password_is_redacted_once_delivered_and_never_stored_in_trials(
    make_wiring: object,
) -> None:
    wiring = make_wiring(SESSION_TIMEOUT_MINUTES="3")  # type: ignore[operator]
    chat = Conversation(wiring, channel="console")
    for text in ("hola", "quiero la prueba", "Ana", "ana@mail.com"):
        replies = chat.send(text)
    password = replies[0].split("Contraseña: ")[1].split("\n")[0]
    from persistence.outbox import deliver_console

    deliver_console(wiring.store, PHONE, wiring.clock.now())
    bodies = [r["body"] for r in rows(wiring, "SELECT body FROM messages")]
    assert not any(password in b for b in bodies)
    assert any("Contraseña: ••••••••" in b for b in bodies)
    assert password not in str(rows(wiring, "SELECT * FROM trials"))


def test_invalid_email_is_asked_again_and_state_stays(wiring: Wiring) -> None:
    chat = Conversation(wiring)
    for text in ("hola", "sí", "Juan"):
        chat.send(text)
    replies = chat.send("juan arroba mail")
    assert len(replies) == 1 and "no parece un email válido" in replies[0]
    assert "nombre@dominio.com" in replies[0]
    assert chat.session()["state"] == "trial_request"
    assert "Usuario:" in chat.send("juan@mail.com")[0]


OPEN_STATE_PATHS = {
    "greeting": ["hola"],
    "trial_request": ["hola", "sí"],
    "trial_request_after_name": ["hola", "sí", "Juan"],
}


@pytest.mark.parametrize("path", OPEN_STATE_PATHS.values(), ids=OPEN_STATE_PATHS.keys())
def test_goodbye_from_every_open_state_closes_with_goodbye(
    wiring: Wiring, path: list[str]
) -> None:
    chat = Conversation(wiring)
    for text in path:
        chat.send(text)
    assert chat.send("gracias, adiós") == [
        "¡Gracias por escribirnos! Cuando quieras, acá estamos. 👋"
    ]
    session = chat.session()
    assert (session["state"], session["close_reason"]) == ("closed", "goodbye")


@pytest.mark.parametrize("path", OPEN_STATE_PATHS.values(), ids=OPEN_STATE_PATHS.keys())
def test_cancel_from_every_open_state_ends_cancelled(wiring: Wiring, path: list[str]) -> None:
    chat = Conversation(wiring)
    for text in path:
        chat.send(text)
    replies = chat.send("no quiero seguir")
    assert replies and "cancelamos" in replies[0]
    session = chat.session()
    assert (session["state"], session["close_reason"]) == ("cancelled", "cancelled")


def test_question_about_cancelling_does_not_cancel(wiring: Wiring) -> None:
    chat = Conversation(wiring)
    chat.send("hola")
    replies = chat.send("¿puedo cancelar después?")
    assert chat.session()["state"] == "greeting" and chat.session()["closed_at"] is None
    assert replies


def test_second_trial_within_cooldown_is_refused_politely(
    wiring: Wiring, clock: FakeClock
) -> None:
    chat = Conversation(wiring)
    for text in ("hola", "sí", "Juan", "juan@mail.com"):
        chat.send(text)
    clock.advance(timedelta(days=3))
    chat.send("hola")
    refusal = chat.send("quiero la prueba")
    assert len(refusal) == 1 and "Ya tenés una prueba gratis" in refusal[0]
    expiry = rows(wiring, "SELECT expires_at FROM trials")[0]["expires_at"]
    assert expiry[8:10] + "/" + expiry[5:7] + "/" + expiry[:4] in refusal[0]
    assert "30 días" in refusal[0]
    session = chat.session()
    assert (session["state"], session["close_reason"]) == ("closed", "trial_refused")
    assert len(rows(wiring, "SELECT * FROM trials")) == 1


def test_trial_after_cooldown_is_granted(wiring: Wiring, clock: FakeClock) -> None:
    chat = Conversation(wiring)
    for text in ("hola", "sí", "Juan", "juan@mail.com"):
        chat.send(text)
    clock.advance(timedelta(days=31))
    for text in ("hola", "sí", "Juan"):
        chat.send(text)
    assert "Usuario:" in chat.send("juan@mail.com")[0]
    assert len(rows(wiring, "SELECT * FROM trials")) == 2


def test_message_after_closure_starts_new_session_and_keeps_history(wiring: Wiring) -> None:
    chat = Conversation(wiring)
    chat.send("hola")
    chat.send("chau")
    replies = chat.send("hola de nuevo")
    assert "¡Hola!" in replies[0]
    sessions = rows(wiring, "SELECT id, state, close_reason FROM sessions ORDER BY id")
    assert [(s["state"], s["close_reason"]) for s in sessions] == [
        ("closed", "goodbye"), ("greeting", None)
    ]


def test_three_misunderstandings_in_a_row_offer_the_options(wiring: Wiring) -> None:
    chat = Conversation(wiring)
    chat.send("hola")
    first, second = chat.send("ehh"), chat.send("mmm qué")
    assert first == second and "¿Querés la prueba gratis?" in first[0]
    third = chat.send("nada que ver")
    assert "*prueba*" in third[0] and "*cancelar*" in third[0]
    assert chat.session()["state"] == "greeting"
    assert chat.send("zzz") == first  # the count starts over


def test_expired_session_is_timed_out_before_a_late_message(
    wiring: Wiring, clock: FakeClock
) -> None:
    chat = Conversation(wiring)
    chat.send("hola")
    clock.advance(timedelta(minutes=4))
    replies = chat.send("sí")
    # The late "sí" still means yes: the new session greets and moves on with it.
    assert "inactividad" in replies[0] and "¡Hola!" in replies[1]
    assert "¿cómo te llamás?" in replies[2]
    sessions = rows(wiring, "SELECT state, close_reason FROM sessions ORDER BY id")
    assert [(s["state"], s["close_reason"]) for s in sessions] == [
        ("timeout", "timeout"), ("trial_request", None)
    ]


def test_first_message_asking_for_the_trial_moves_on_at_once(wiring: Wiring) -> None:
    chat = Conversation(wiring)
    replies = chat.send("hola! quiero la prueba gratis")
    assert len(replies) == 2 and "¿cómo te llamás?" in replies[1]
    assert chat.session()["state"] == "trial_request"


def test_media_only_message_leaves_the_state(wiring: Wiring) -> None:
    chat = Conversation(wiring)
    chat.send("hola")
    replies = chat.send("", kind="media")
    assert replies == ["Por ahora solo leo mensajes de texto. 🙏 ¿Me lo escribís, por favor?"]
    assert chat.session()["state"] == "greeting"


def test_repeated_message_id_is_processed_once(wiring: Wiring) -> None:
    inbound = Inbound(channel="whatsapp", phone=PHONE, text="hola", message_id="SMdup")
    assert wiring.conversations.handle(inbound)
    assert wiring.conversations.handle(inbound) == []
    assert len(rows(wiring, "SELECT * FROM messages WHERE direction = 'in'")) == 1
    assert len(rows(wiring, "SELECT * FROM messages WHERE direction = 'out'")) == 1


class _Raising:
    def issue(self, request: CredentialRequest) -> Credentials:
        raise RuntimeError("accounts API is down")


def test_provider_failure_apologises_and_closes_with_error(make_wiring: object) -> None:
    wiring = make_wiring(provider=_Raising())  # type: ignore[operator]
    chat = Conversation(wiring)
    for text in ("hola", "sí", "Juan"):
        chat.send(text)
    replies = chat.send("juan@mail.com")
    assert replies == [
        "Perdón, tuvimos un problema de nuestro lado y no pudimos seguir. 😔 "
        "Escribinos de nuevo en un rato y arrancamos otra vez."
    ]
    session = chat.session()
    assert (session["state"], session["close_reason"]) == ("closed", "error")
    event = rows(wiring, "SELECT * FROM session_events ORDER BY id DESC LIMIT 1")[0]
    assert event["trigger"] == "fail" and "accounts API is down" in event["detail"]
    assert rows(wiring, "SELECT * FROM trials") == []


def test_provider_is_called_outside_the_write_lock(make_wiring: object) -> None:
    """While the provider runs, another process can write to the database."""
    import sqlite3

    seen: list[str] = []

    class Probing:
        def issue(self, request: CredentialRequest) -> Credentials:
            conn = sqlite3.connect(wiring.settings.database_url.removeprefix("sqlite:///"),
                                   timeout=0.2)
            conn.execute("BEGIN IMMEDIATE")  # fails with "database is locked" under the lock
            conn.rollback()
            conn.close()
            seen.append(request.key)
            from engine.credentials.local import LocalCredentialProvider

            return LocalCredentialProvider().issue(request)

    wiring = make_wiring(provider=Probing())  # type: ignore[operator]
    chat = Conversation(wiring)
    for text in ("hola", "sí", "Juan"):
        chat.send(text)
    assert "Usuario:" in chat.send("juan@mail.com")[0]
    assert seen == [str(chat.session()["id"])]
