"""Broken on purpose: vocabulary names an intent the engine does not know."""

# ruff: noqa: RUF012  (flow files declare their tables as plain class attributes)
from __future__ import annotations

from engine import Decision, Flow, Turn, step


class UnknownVocabularyIntent(Flow):
    name = "unknown_vocabulary_intent"

    states = ["greeting", "closed", "timeout", "cancelled"]
    initial = "greeting"
    final = ["closed", "timeout", "cancelled"]

    vocabulary = {"afirmacon": ["de una"]}

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
