"""Broken on purpose: open state 'asking' has no @step("asking") function."""

# ruff: noqa: RUF012  (flow files declare their tables as plain class attributes)
from __future__ import annotations

from engine import Decision, Flow, Turn, step


class OpenStateWithoutStep(Flow):
    name = "open_state_without_step"

    states = ["greeting", "asking", "closed", "timeout", "cancelled"]
    initial = "greeting"
    final = ["closed", "timeout", "cancelled"]

    texts = {
        "greeting": "¡Hola! ¿Seguimos? Respondé *sí*.",
        "ask_name": "¿Cómo te llamás?",
        "thanks": "¡Gracias!",
    }

    transitions = [
        {"trigger": "accept", "source": "greeting", "dest": "asking", "say": "ask_name"},
        {"trigger": "take_name", "source": "asking", "dest": "closed", "say": "thanks",
         "reason": "goodbye"},
    ]

    @step("greeting")
    def offer(self, turn: Turn) -> Decision:
        if turn.intent == "afirmacion":
            return turn.move("accept")
        return turn.not_understood()
