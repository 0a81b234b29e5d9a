"""Broken on purpose: a `return` dedented out of its step, into the class body.

Python refuses to compile it ("'return' outside function"). It is a syntax error that
ruff reports as a lint (F706), so the noqa below keeps `ruff check tests` clean.
"""

# ruff: noqa: RUF012  (flow files declare their tables as plain class attributes)
from __future__ import annotations

from engine import Decision, Flow, Turn, step


class SyntaxErrorFlow(Flow):
    name = "syntax_error"

    states = ["greeting", "closed", "timeout", "cancelled"]
    initial = "greeting"
    final = ["closed", "timeout", "cancelled"]

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
    return turn.not_understood()  # noqa: F706, F821
