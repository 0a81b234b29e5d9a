"""Broken on purpose: a state's own timeout fires a trigger that does not leave it."""

# ruff: noqa: RUF012  (flow files declare their tables as plain class attributes)
from __future__ import annotations

from datetime import timedelta

from engine import Decision, Flow, Timeout, Turn, step


class TimeoutBadTrigger(Flow):
    name = "timeout_bad_trigger"

    states = ["greeting", "closed", "timeout", "cancelled"]
    initial = "greeting"
    final = ["closed", "timeout", "cancelled"]

    timeouts = {"greeting": Timeout(timedelta(minutes=5), "remnd")}

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
