"""Compile a checked Flow class into the CompiledFlow the conversations run."""

from __future__ import annotations

from engine.core.flow import ENGINE_TRIGGERS, CompiledFlow, Flow, Route
from engine.core.flowcheck import check_flow, routes_of, steps_of

__all__ = ["compile_flow"]


def compile_flow(cls: type[Flow], file: str) -> CompiledFlow:
    """Check `cls` and compile it; raises FlowDefinitionError naming the first problem."""
    problems = check_flow(cls, file)
    if problems:
        raise problems[0]
    routes = routes_of(cls) + _engine_routes(cls)
    return CompiledFlow(cls, file, routes, steps_of(cls))


def _engine_routes(cls: type[Flow]) -> list[Route]:
    open_states = [s for s in cls.states if s not in cls.final]
    return [
        Route(trigger, source, dest, say, reason)
        for trigger, (dest, reason, say) in ENGINE_TRIGGERS.items()
        if dest in cls.states and (trigger != "keyword_close" or cls.closing_keywords)
        for source in open_states
    ]
