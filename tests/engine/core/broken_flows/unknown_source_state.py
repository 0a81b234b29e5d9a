"""Broken on purpose: a transition starts from 'asknig', a typo of 'asking'."""

# ruff: noqa: RUF012  (flow files declare their tables as plain class attributes)
from __future__ import annotations

from engine import Decision, Flow, Turn, step


class UnknownSourceState(Flow):
    name = "unknown_source_state"

    states = ["greeting", "asking", "closed", "timeout", "cancelled"]
    initial = "greeting"
    final = ["closed", "timeout", "cancelled"]

    texts = {
        "greeting": "¡Hola! ¿Seguimos? Respondé *sí*.",
        "ask_name": "¿Cómo te llamás?",
        "thanks": "¡Gracias, {name}!",
    }

    transitions = [
        {"trigger": "accept", "source": "greeting", "dest": "asking", "say": "ask_name"},
        {"trigger": "take_name", "source": "asking", "dest": "closed", "say": "thanks",
         "reason": "goodbye"},
        {"trigger": "restart", "source": "asknig", "dest": "greeting", "say": "greeting"},
    ]

    @step("greeting")
    def offer(self, turn: Turn) -> Decision:
        if turn.intent == "afirmacion":
            return turn.move("accept")
        return turn.not_understood()

    @step("asking")
    def collect(self, turn: Turn) -> Decision:
        return turn.move("take_name", name=turn.text.strip())
