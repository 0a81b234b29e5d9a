"""Broken on purpose: text 'done' needs {hour}, which no step passes or stores."""

# ruff: noqa: RUF012  (flow files declare their tables as plain class attributes)
from __future__ import annotations

from engine import Decision, Flow, Turn, step


class UnprovidedPlaceholder(Flow):
    name = "unprovided_placeholder"

    states = ["greeting", "closed", "timeout", "cancelled"]
    initial = "greeting"
    final = ["closed", "timeout", "cancelled"]

    texts = {
        "greeting": "¡Hola! ¿Seguimos? Respondé *sí*.",
        "done": "¡Listo! Te esperamos a las {hour}.",
    }

    transitions = [
        {"trigger": "accept", "source": "greeting", "dest": "closed", "say": "done",
         "reason": "goodbye"},
    ]

    @step("greeting")
    def offer(self, turn: Turn) -> Decision:
        if turn.intent == "afirmacion":
            return turn.move("accept", people=2)
        return turn.not_understood()
