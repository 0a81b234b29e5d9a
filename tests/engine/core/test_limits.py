"""Abuse limits in the core, on every Store backend (issue 11, item 3): the per-phone
inbound rate, the cap on what a flow reads from the user, on the parts of one text and
on the messages of one turn."""

from __future__ import annotations

from datetime import timedelta

from engine.core.clock import FakeClock
from engine.core.conversations import Conversations, ConversationSettings
from engine.core.flow import BASE_TEXTS
from engine.core.text import MAX_BODY, split_body
from engine.core.unit import OutputLimits
from engine.credentials.local import LocalCredentialProvider
from engine.flowfiles import load_flows
from tests.support.chat import Chat
from tests.support.paths import FLOWS
from tests.support.stores import Backend
from tests.support.trial import text_of

SLOW_DOWN = BASE_TEXTS["slow_down"]


def engine(backend: Backend, clock: FakeClock, **settings: object) -> Conversations:
    return Conversations(flows=load_flows(FLOWS, "trial"), store=backend.store, clock=clock,
                         provider=LocalCredentialProvider(),
                         settings=ConversationSettings(**settings))  # type: ignore[arg-type]


def test_over_the_rate_one_slow_down_then_silence_until_the_window_ends(
    backend: Backend, clock: FakeClock,
) -> None:
    chat = Chat(engine(backend, clock, rate_limit=3, rate_window=timedelta(minutes=1)))
    assert chat.send("hola") == [text_of("greeting", saludo_nombre="")]
    assert chat.send("qué es esto") == [text_of("offer_again")]
    assert chat.send("no entiendo") == [text_of("offer_again")]
    assert chat.send("hola?") == [SLOW_DOWN]  # the fourth: one polite notice
    assert chat.send("sí") == []
    clock.advance(timedelta(seconds=30))
    assert chat.send("sí!") == []  # still in the window that began with "hola"
    # Every message was stored, answered or not.
    inbound = [m["body"] for m in backend.rows("messages") if m["direction"] == "in"]
    assert inbound == ["hola", "qué es esto", "no entiendo", "hola?", "sí", "sí!"]
    [session] = backend.rows("sessions")
    assert session["state"] == "greeting"  # the silenced "sí" moved nothing

    clock.advance(timedelta(seconds=31))  # the window is over: a new one begins
    assert chat.send("sí") == [text_of("ask_name")]


def test_the_rate_is_per_phone(backend: Backend, clock: FakeClock) -> None:
    conversations = engine(backend, clock, rate_limit=1)
    flooder = Chat(conversations)
    other = Chat(conversations, phone="+5491123450000")
    flooder.send("hola")
    assert flooder.send("hola") == [SLOW_DOWN]
    assert other.send("hola") == [text_of("greeting", saludo_nombre="")]


def test_a_huge_name_is_stored_and_echoed_capped(backend: Backend, clock: FakeClock) -> None:
    chat = Chat(engine(backend, clock, max_input_chars=100))
    chat.send("hola", profile_name="P" * 5000)
    chat.send("sí")
    [reply] = chat.send("A" * 60_000)  # one word of 60 KB: a "name" to the flow
    assert reply.startswith("Gracias, A") and len(reply) < 300
    [session] = backend.rows("sessions")
    assert len(session["context"]["name"]) == 100
    greeting = next(m["body"] for m in backend.rows("messages") if m["direction"] == "out")
    # The value the flow hands to its text is capped too.
    assert greeting == text_of("greeting", saludo_nombre=(", " + "P" * 100)[:100])


def test_one_turn_sends_at_most_its_cap_of_messages(backend: Backend, clock: FakeClock) -> None:
    # A 5,000-character name is echoed in four parts; two messages are allowed per turn.
    chat = Chat(engine(backend, clock, max_input_chars=10_000,
                       output=OutputLimits(per_turn=2, parts=10)))
    chat.send("hola")
    chat.send("sí")
    long_name = " ".join(["Abcdefghij" * 100] * 5)  # five words, 5,004 characters
    parts = chat.send(long_name)
    assert len(parts) == 2 and all(len(p) <= MAX_BODY for p in parts)


def test_a_long_text_is_split_into_a_few_parts_never_dozens() -> None:
    body = " ".join(["palabra"] * 10_000)  # 80 KB: 50 parts as it was split before
    parts = split_body(body)
    assert len(parts) == 3
    assert all(len(p) <= MAX_BODY for p in parts)
    assert parts[-1].endswith("…")
    assert split_body(body, max_parts=5)[:2] == parts[:2]
    assert split_body("corto") == ["corto"]
