"""Broken on purpose, three times over:

1. the 'accept' transition says 'ask_nmae', which texts lacks;
2. open state 'asking' has no step function;
3. a step is marked @step("nonexistent"), a state the flow lacks.
"""

# ruff: noqa: RUF012  (flow files declare their tables as plain class attributes)
from __future__ import annotations

from engine import Decision, Flow, Turn, step


class MultiMistake(Flow):
    name = "multi_mistake"

    states = ["greeting", "asking", "closed", "timeout", "cancelled"]
    initial = "greeting"
    final = ["closed", "timeout", "cancelled"]

    texts = {
        "greeting": "¡Hola! ¿Seguimos? Respondé *sí*.",
        "ask_name": "¿Cómo te llamás?",
        "thanks": "¡Gracias!",
    }

    transitions = [
        {"trigger": "accept", "source": "greeting", "dest": "asking", "say": "ask_nmae"},
        {"trigger": "take_name", "source": "asking", "dest": "closed", "say": "thanks",
         "reason": "goodbye"},
    ]

    @step("greeting")
    def offer(self, turn: Turn) -> Decision:
        if turn.intent == "afirmacion":
            return turn.move("accept")
        return turn.not_understood()

    @step("nonexistent")
    def ghost(self, turn: Turn) -> Decision:
        return turn.not_understood()
