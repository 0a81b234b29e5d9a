"""The compiled flows by name, and the one new conversations start in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from engine.core.errors import FlowNotFound
from engine.core.flow import CompiledFlow

__all__ = ["FlowRegistry"]


@dataclass(frozen=True)
class FlowRegistry:
    """The compiled flows by name, and the one new conversations start in."""

    flows: dict[str, CompiledFlow]
    default_name: str

    @property
    def default(self) -> CompiledFlow:
        return self.get(self.default_name)

    def get(self, name: str) -> CompiledFlow:
        try:
            return self.flows[name]
        except KeyError:
            raise FlowNotFound(name, list(self.flows)) from None

    def close_reasons(self) -> list[str]:
        """Every reason a session can close with: the engine's and each flow's own."""
        return sorted({reason for flow in self for reason in flow.close_reasons})

    def __iter__(self) -> Iterator[CompiledFlow]:
        return iter(self.flows.values())
