"""Broken on purpose: no transition ever enters state 'orphan'."""

# ruff: noqa: RUF012  (flow files declare their tables as plain class attributes)
from __future__ import annotations

from engine import Decision, Flow, Turn, step


class UnreachableState(Flow):
    name = "unreachable_state"

    states = ["greeting", "orphan", "closed", "timeout", "cancelled"]
    initial = "greeting"
    final = ["closed", "timeout", "cancelled"]

    texts = {
        "greeting": "¡Hola! ¿Seguimos? Respondé *sí*.",
        "done": "¡Listo!",
    }

    transitions = [
        {"trigger": "accept", "source": "greeting", "dest": "closed", "say": "done",
         "reason": "goodbye"},
        {"trigger": "leave", "source": "orphan", "dest": "closed", "reason": "goodbye"},
    ]

    @step("greeting")
    def offer(self, turn: Turn) -> Decision:
        if turn.intent == "afirmacion":
            return turn.move("accept")
        return turn.not_understood()

    @step("orphan")
    def wander(self, turn: Turn) -> Decision:
        return turn.move("leave")
