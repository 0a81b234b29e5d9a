"""Broken on purpose: once in state 'limbo', no transition of the table leads out."""

# ruff: noqa: RUF012  (flow files declare their tables as plain class attributes)
from __future__ import annotations

from engine import Decision, Flow, Turn, step


class DeadEnd(Flow):
    name = "dead_end"

    states = ["greeting", "limbo", "closed", "timeout", "cancelled"]
    initial = "greeting"
    final = ["closed", "timeout", "cancelled"]

    texts = {
        "greeting": "¡Hola! ¿Seguimos? Respondé *sí*.",
        "waiting": "Esperando…",
        "declined": "¡Dale, chau!",
    }

    transitions = [
        {"trigger": "accept", "source": "greeting", "dest": "limbo", "say": "waiting"},
        {"trigger": "decline", "source": "greeting", "dest": "closed", "say": "declined",
         "reason": "goodbye"},
    ]

    @step("greeting")
    def offer(self, turn: Turn) -> Decision:
        if turn.intent == "afirmacion":
            return turn.move("accept")
        return turn.move("decline")

    @step("limbo")
    def wait(self, turn: Turn) -> Decision:
        return turn.stay("waiting")
