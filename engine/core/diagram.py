"""Mermaid diagrams of a flow, drawn offline with transitions' own diagram support."""

from __future__ import annotations

from transitions.extensions import GraphMachine

from engine.core.flow import CompiledFlow

__all__ = ["mermaid"]


class _Model:
    pass


def mermaid(flow: CompiledFlow) -> str:
    """A `stateDiagram-v2` of the flow, engine exits included, final states marked."""
    # A GraphMachine keeps a graph per model: fine here, never on the request path.
    model = _Model()
    GraphMachine(
        model=model, states=list(flow.states), initial=flow.initial, auto_transitions=False,
        transitions=_collapsed(flow), graph_engine="mermaid", title=f"flow {flow.name}",
        show_state_attributes=False,
    )
    source: str = model.get_graph().draw(None)  # type: ignore[attr-defined]
    # Drop the colour classes: they mark a model's current state, meaningless here.
    lines = [line.rstrip() for line in source.splitlines()
             if line.strip() and not line.strip().startswith(("Class ", "classDef"))]
    lines += [f"  {state} --> [*]" for state in flow.states if state in flow.final]
    return "\n".join(lines) + "\n"


def _collapsed(flow: CompiledFlow) -> list[dict[str, str]]:
    """One arrow per (source, dest, trigger): engine exits from every state included."""
    return [{"trigger": r.trigger, "source": r.source, "dest": r.dest} for r in flow.routes]
