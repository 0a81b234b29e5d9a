"""Flow options a flow author opts in to: closing keywords and extra vocabulary.

Each test writes a small flow file into its own FLOWS_DIR, as an author would, and talks
to it through the real engine and store; assertions read what the user got and what ops
see in the tables.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from engine.core.ports import Inbound
from engine.wiring import Wiring
from tests.support.paths import FLOWS
from tests.support.wiring import rows

PHONE = "+5491155554444"

ECHO = '''\
"""Repeats what you write; "terminamos" gets a farewell."""

from engine import Decision, Flow, Turn, step


class Echo(Flow):
    name = "echo"

    states = ["talking", "closed", "timeout", "cancelled"]
    initial = "talking"
    final = ["closed", "timeout", "cancelled"]
    #KEYWORDS#

    texts = {
        "greeting": "¡Hola! Escribí algo y te lo repito.",
        "echo": "Dijiste: {text}",
        "farewell": "Bueno, terminamos acá. ¡Hasta la Próxima!",
    }

    transitions = [
        {"trigger": "finish", "source": "talking", "dest": "closed", "say": "farewell",
         "reason": "goodbye"},
    ]

    @step("talking")
    def repeat(self, turn: Turn) -> Decision:
        if "terminamos" in turn.text.lower():
            return turn.stay("farewell")
        return turn.stay("echo", text=turn.text)
'''

VOTE = '''\
"""Asks for a yes; this flow's users say "de diez"."""

from engine import Decision, Flow, Turn, step


class Vote(Flow):
    name = "vote"

    states = ["asking", "closed", "timeout", "cancelled"]
    initial = "asking"
    final = ["closed", "timeout", "cancelled"]
    #VOCABULARY#

    texts = {
        "greeting": "¿Te gustó la charla? Contestame sí o no.",
        "again": "¿Sí o no?",
        "thanks": "¡Buenísimo, gracias!",
    }

    transitions = [
        {"trigger": "agree", "source": "asking", "dest": "closed", "say": "thanks",
         "reason": "goodbye"},
    ]
    reprompts = {"asking": "again"}

    @step("asking")
    def ask(self, turn: Turn) -> Decision:
        if turn.intent == "afirmacion":
            return turn.move("agree")
        return turn.not_understood()
'''


class Chat:
    """One WhatsApp user talking to the engine; keeps what the user received."""

    def __init__(self, wiring: Wiring, phone: str = PHONE) -> None:
        self.wiring, self.phone, self.sent = wiring, phone, 0

    def send(self, text: str) -> list[str]:
        self.sent += 1
        inbound = Inbound(channel="whatsapp", phone=self.phone, text=text,
                          message_id=f"SM{self.phone[1:]}{self.sent:06d}")
        return [o.body for o in self.wiring.conversations.handle(inbound)]

    def sessions(self) -> list[dict[str, object]]:
        return rows(self.wiring, "SELECT * FROM sessions WHERE phone = :p ORDER BY id",
                    p=self.phone)


def _flows_dir(tmp_path: Path, name: str, source: str) -> Path:
    (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
    return tmp_path


def _echo(make_wiring: Callable[..., Wiring], tmp_path: Path, keywords: str) -> Wiring:
    source = ECHO.replace("#KEYWORDS#", keywords)
    return make_wiring(FLOWS_DIR=str(_flows_dir(tmp_path, "echo", source)),
                         DEFAULT_FLOW="echo")


def test_reply_containing_a_closing_keyword_closes_with_reason_keyword(
    make_wiring: Callable[..., Wiring], tmp_path: Path
) -> None:
    wiring = _echo(make_wiring, tmp_path, 'closing_keywords = ("hasta la próxima",)')
    chat = Chat(wiring)
    assert chat.send("hola") == ["¡Hola! Escribí algo y te lo repito."]

    # The keyword is matched regardless of case: the reply says "Hasta la Próxima".
    assert chat.send("ya está, terminamos") == ["Bueno, terminamos acá. ¡Hasta la Próxima!"]

    (session,) = chat.sessions()
    assert (session["state"], session["close_reason"]) == ("closed", "keyword")
    assert session["closed_at"] is not None
    events = rows(wiring, "SELECT from_state, to_state, trigger, detail FROM session_events "
                  "WHERE session_id = :s ORDER BY id", s=session["id"])
    assert events[-1] == {"from_state": "talking", "to_state": "closed",
                          "trigger": "keyword_close", "detail": "closing keyword in reply"}
    # The next message starts a new conversation; the closed one is kept.
    assert chat.send("hola otra vez") == ["¡Hola! Escribí algo y te lo repito."]
    first, second = chat.sessions()
    assert first["close_reason"] == "keyword" and second["closed_at"] is None


def test_reply_without_the_keyword_leaves_the_session_open(
    make_wiring: Callable[..., Wiring], tmp_path: Path
) -> None:
    wiring = _echo(make_wiring, tmp_path, 'closing_keywords = ("hasta la próxima",)')
    chat = Chat(wiring)
    chat.send("hola")

    assert chat.send("me gusta el mate") == ["Dijiste: me gusta el mate"]
    assert chat.send("y el fernet") == ["Dijiste: y el fernet"]

    (session,) = chat.sessions()
    assert (session["state"], session["closed_at"], session["close_reason"]) == (
        "talking", None, None)
    triggers = [e["trigger"] for e in rows(wiring, "SELECT trigger FROM session_events")]
    assert "keyword_close" not in triggers


def test_without_closing_keywords_the_same_reply_does_not_close(
    make_wiring: Callable[..., Wiring], tmp_path: Path
) -> None:
    wiring = _echo(make_wiring, tmp_path, "")
    chat = Chat(wiring)
    chat.send("hola")

    assert chat.send("terminamos") == ["Bueno, terminamos acá. ¡Hasta la Próxima!"]

    (session,) = chat.sessions()
    assert (session["state"], session["closed_at"]) == ("talking", None)
    assert wiring.flows.get("echo").closing_keywords == ()


def test_trial_flow_has_no_closing_keywords_and_a_normal_conversation_stays_open(
    wiring: Wiring,
) -> None:
    trial = wiring.flows.get("trial")
    assert trial.cls.closing_keywords == () and trial.closing_keywords == ()
    chat = Chat(wiring)
    for text in ("hola", "sí, dale", "Ana Díaz"):
        assert chat.send(text)

    (session,) = chat.sessions()
    assert (session["state"], session["closed_at"]) == ("trial_request", None)
    triggers = [e["trigger"] for e in rows(wiring, "SELECT trigger FROM session_events")]
    assert triggers == ["start", "accept", "take_name"]


def test_flow_vocabulary_makes_de_diez_a_yes(
    make_wiring: Callable[..., Wiring], tmp_path: Path
) -> None:
    source = VOTE.replace("#VOCABULARY#", 'vocabulary = {"afirmacion": ["de diez"]}')
    wiring = make_wiring(FLOWS_DIR=str(_flows_dir(tmp_path, "vote", source)),
                             DEFAULT_FLOW="vote")
    chat = Chat(wiring)
    chat.send("hola")

    assert chat.send("¡De diez!") == ["¡Buenísimo, gracias!"]

    (session,) = chat.sessions()
    assert (session["state"], session["close_reason"]) == ("closed", "goodbye")


def test_without_the_vocabulary_de_diez_is_not_understood(
    make_wiring: Callable[..., Wiring], tmp_path: Path
) -> None:
    wiring = make_wiring(
        FLOWS_DIR=str(_flows_dir(tmp_path, "vote", VOTE.replace("#VOCABULARY#", ""))),
        DEFAULT_FLOW="vote",
    )
    chat = Chat(wiring)
    chat.send("hola")

    assert chat.send("de diez") == ["¿Sí o no?"]
    (session,) = chat.sessions()
    assert (session["state"], session["closed_at"]) == ("asking", None)


def test_one_flows_vocabulary_does_not_leak_into_another_flow(
    make_wiring: Callable[..., Wiring], tmp_path: Path
) -> None:
    source = VOTE.replace("#VOCABULARY#", 'vocabulary = {"afirmacion": ["de diez"]}')
    flows_dir = _flows_dir(tmp_path, "vote", source)
    shutil.copy(FLOWS / "trial.py", flows_dir / "trial.py")
    make_wiring(FLOWS_DIR=str(flows_dir), DEFAULT_FLOW="vote")  # vote's vocabulary loaded
    trial = make_wiring(FLOWS_DIR=str(flows_dir), DEFAULT_FLOW="trial")
    chat = Chat(trial, phone="+5491166667777")
    chat.send("hola")

    assert chat.send("de diez") == [
        "¿Querés la prueba gratis? Respondé *sí* para empezar o *chau* para salir."
    ]
    (session,) = chat.sessions()
    assert session["state"] == "greeting"
