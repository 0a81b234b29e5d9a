"""Broken on purpose: renamed sends an old state to one that does not exist."""

# ruff: noqa: RUF012  (flow files declare their tables as plain class attributes)
from __future__ import annotations

from engine import Decision, Flow, Turn, step


class RenamedToUnknown(Flow):
    name = "renamed_to_unknown"

    states = ["greeting", "closed", "timeout", "cancelled"]
    initial = "greeting"
    final = ["closed", "timeout", "cancelled"]

    renamed = {"welcome": "greting"}

    texts = {
        "greeting": "¡Hola! ¿Seguimos? Respondé *sí*.",
        "done": "¡Listo!",
    }

    transitions = [
        {"trigger": "accept", "source": "greeting", "dest": "closed", "say": "done",
         "reason": "goodbye"},
    ]

    @step("greeting")
    def offer(self, turn: Turn) -> Decision:
        if turn.intent == "afirmacion":
            return turn.move("accept")
        return turn.not_understood()
