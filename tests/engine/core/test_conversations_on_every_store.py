"""The core runs on every Store backend: trial conversations through `Conversations`
on SQLite, in memory (and PostgreSQL when configured), read back through the port's
rows (tests/support/stores.py)."""

from __future__ import annotations

from datetime import timedelta

from engine.core.clock import FakeClock
from engine.core.flow import BASE_TEXTS
from engine.core.ports import Inbound
from tests.support.chat import PHONE, Chat, conversations_on
from tests.support.stores import Backend
from tests.support.trial import text_of


def test_happy_path_delivers_credentials_and_closes(backend: Backend, clock: FakeClock) -> None:
    chat = Chat(conversations_on(backend.store, clock))
    assert chat.send("hola", profile_name="Lucía") == [
        text_of("greeting", saludo_nombre=", Lucía")]
    assert chat.send("sí, dale") == [text_of("ask_name")]
    assert chat.send("lucía gómez") == [text_of("ask_email", name="Lucía Gómez")]
    creds, closing = chat.send("Lucia.Gomez@Example.com")

    assert "Usuario: lucia" in creds and "Contraseña: " in creds and "Vence:" in creds
    assert closing == text_of("closing")
    password = creds.split("Contraseña: ")[1].split("\n")[0]
    [session] = backend.rows("sessions")
    assert (session["state"], session["close_reason"]) == ("closed", "credentials_delivered")
    assert session["closed_at"] == clock.now()
    assert session["context"] == {"name": "Lucía Gómez", "email": "lucia.gomez@example.com"}
    [trial] = backend.rows("trials")
    assert (trial["phone"], trial["session_id"]) == (PHONE, session["id"])
    assert trial["username"].startswith("lucia") and trial["expires_at"] > clock.now()
    assert backend.select("session_events", "from_state", "to_state", "trigger") == [
        (None, "greeting", "start"),
        ("greeting", "trial_request", "accept"),
        ("trial_request", "trial_request", "take_name"),
        ("trial_request", "credentials", "take_email"),
        ("credentials", "closed", "deliver"),
    ]
    messages = backend.rows("messages")
    assert [m["body"] for m in messages if m["direction"] == "in"] == [
        "hola", "sí, dale", "lucía gómez", "Lucia.Gomez@Example.com"]
    out = [m for m in messages if m["direction"] == "out"]
    assert [m["body"] for m in out][-2:] == [creds.replace(password, "••••••••"), closing]
    assert {m["status"] for m in out} == {"pending"}
    # Only the credentials carry the password, stored sealed; their body hides it.
    assert [m["body_sealed"] is not None for m in out] == [False, False, False, True, False]
    assert password not in out[-2]["body_sealed"]
    assert backend.store.sealer.open(out[-2]["body_sealed"]) == creds  # type: ignore[attr-defined]


def test_repeated_message_id_is_processed_once(backend: Backend, clock: FakeClock) -> None:
    conversations = conversations_on(backend.store, clock)
    inbound = Inbound(channel="whatsapp", phone=PHONE, text="hola", message_id="SMdup")
    assert [o.body for o in conversations.handle(inbound)] == [
        text_of("greeting", saludo_nombre="")]
    assert conversations.handle(inbound) == []
    assert backend.select("messages", "direction", "twilio_sid") == [
        ("in", "SMdup"), ("out", None)]


def test_second_trial_within_cooldown_is_refused(backend: Backend, clock: FakeClock) -> None:
    chat = Chat(conversations_on(backend.store, clock))
    for text in ("hola", "sí", "Juan", "juan@mail.com"):
        chat.send(text)
    clock.advance(timedelta(days=3))
    chat.send("hola")
    [refusal] = chat.send("quiero la prueba")
    assert "Ya tenés una prueba gratis" in refusal and "30 días" in refusal
    assert backend.select("sessions", "state", "close_reason") == [
        ("closed", "credentials_delivered"), ("closed", "trial_refused")]
    assert len(backend.rows("trials")) == 1


def test_expire_times_out_an_idle_session_once(backend: Backend, clock: FakeClock) -> None:
    conversations = conversations_on(backend.store, clock)
    Chat(conversations).send("hola")
    [session] = backend.rows("sessions")
    assert conversations.expire(session["id"]) == session["expires_at"]  # not due: re-arm
    clock.advance(timedelta(minutes=4))
    assert conversations.expire(session["id"]) is None
    assert conversations.expire(session["id"]) is None
    assert backend.select("sessions", "state", "close_reason") == [("timeout", "timeout")]
    out = [m["body"] for m in backend.rows("messages") if m["direction"] == "out"]
    assert out == [text_of("greeting", saludo_nombre=""), BASE_TEXTS["timeout_notice"]]
