"""Where things are: the repository, the shipped flows, the flows broken on purpose."""

from __future__ import annotations

from pathlib import Path

__all__ = ["BROKEN_FLOWS", "FLOWS", "REPO"]

REPO = Path(__file__).resolve().parents[2]
FLOWS = REPO / "flows"
# Minimal flows with one mistake each, loaded by path by the flow checker's and the
# CLI's tests.
BROKEN_FLOWS = REPO / "tests" / "engine" / "core" / "broken_flows"
