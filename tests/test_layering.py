"""The dependency rule: flows -> engine core <- adapters (DESIGN.md, "Layout").

The rule is checked by folder, not by a list of files: every module under engine/core/
imports only the standard library, `transitions` and engine.core itself, so a module
added there tomorrow is covered the day it lands. Adapters and persistence never
reach into the composition root, and no module of the product imports itself back
through a cycle, at any depth (function-level imports included).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.paths import FLOWS, REPO

ENGINE = REPO / "engine"
CORE = ENGINE / "core"
PRODUCT = ("engine", "persistence")

# What the core may import besides itself: the standard library and the FSM library.
CORE_ALLOWED_THIRD_PARTY = frozenset({"transitions"})
# The composition root: settings, flow loading and wiring, directly in engine/.
COMPOSITION_ROOT = frozenset({"engine.settings", "engine.flowfiles", "engine.wiring"})


# -- the import scanner ------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    module: str  # the absolute dotted module name imported (or imported from)
    names: tuple[str, ...]  # for `from m import a, b`: ("a", "b"); empty for `import m`
    line: int

    def targets(self) -> list[str]:
        """Every dotted name this statement may load: `from engine import server` loads
        engine.server, so it is checked as such."""
        return [self.module, *(f"{self.module}.{name}" for name in self.names)]


def imports_of(source: str, module: str, *, is_package: bool = False) -> list[Import]:
    """Every import in `source`, at any depth (function-level, TYPE_CHECKING, try)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, (), node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.append(Import(base, tuple(a.name for a in node.names), node.lineno))
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def core_violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """What a core module imports beyond the stdlib, transitions and engine.core."""
    bad: list[str] = []
    for imp in imports_of(source, module, is_package=is_package):
        top = imp.module.split(".")[0]
        if top == "__future__" or top in CORE_ALLOWED_THIRD_PARTY:
            continue
        if top in sys.stdlib_module_names:
            continue
        if top == "engine" and _core_only(imp):
            continue
        bad.append(f"{imp.line}: {imp.module}")
    return bad


def _core_only(imp: Import) -> bool:
    if _within(imp.module, "engine.core"):
        return True
    # `from engine import core` is fine; `from engine import server` is not.
    return imp.module == "engine" and bool(imp.names) and set(imp.names) == {"core"}


def flow_violations(source: str) -> list[str]:
    """Flows import only `from engine import ...` and the standard library."""
    bad: list[str] = []
    for imp in imports_of(source, "flows.x"):
        top = imp.module.split(".")[0]
        if imp.module == "engine" and imp.names:
            continue  # from engine import Flow, ...
        if top == "__future__" or (top in sys.stdlib_module_names and top != "engine"):
            continue
        bad.append(f"{imp.line}: {imp.module}" + (f" ({', '.join(imp.names)})"
                                                   if imp.names else ""))
    return bad


# -- the product's modules and their import graph -------------------------------------------


def module_of(path: Path) -> tuple[str, bool]:
    """The dotted name of a file under the repo, and whether it is a package."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def product_files() -> list[Path]:
    return sorted(p for top in PRODUCT for p in (REPO / top).rglob("*.py"))


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def import_graph(files: Iterable[Path]) -> dict[str, set[str]]:
    """module -> the product modules it imports (a `from pkg import mod` counts as mod)."""
    modules = {module_of(p)[0]: p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = module_of(path)[1]
        edges: set[str] = set()
        for imp in imports_of(path.read_text(encoding="utf-8"), name, is_package=is_package):
            for target in imp.targets():
                if target in modules and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


# -- the scanners themselves catch what they should -----------------------------------------


def test_core_scanner_flags_io_adapters_and_the_composition_root_at_any_depth() -> None:
    source = (
        "import os\n"
        "from engine.core.ports import Inbound\n"
        "def f():\n"
        "    import sqlalchemy.orm\n"
        "    from persistence.store import SqlStore\n"
        "from engine import server\n"
        "from .. import wiring\n"
        "from ..channels.console import ConsoleChat\n"
        "from twilio.rest import Client\n"
        "import requests\n"
    )
    assert sorted(core_violations(source, "engine.core.conversations")) == [
        "10: requests", "4: sqlalchemy.orm", "5: persistence.store", "6: engine",
        "7: engine", "8: engine.channels.console", "9: twilio.rest",
    ]


def test_core_scanner_accepts_core_stdlib_and_transitions() -> None:
    source = ("from engine.core.flow import Flow\nfrom . import ports\nimport transitions\n"
              "from transitions import Machine\nimport re\nfrom engine import core\n")
    assert core_violations(source, "engine.core.conversations") == []


def test_flow_scanner_rejects_submodules_of_engine_and_third_party() -> None:
    source = (
        "import re\nfrom engine import Flow\nfrom engine.core.flow import step\n"
        "import sqlalchemy\nfrom persistence import store\nimport engine\n"
    )
    assert sorted(flow_violations(source)) == [
        "3: engine.core.flow (step)", "4: sqlalchemy", "5: persistence (store)", "6: engine",
    ]


def test_cycle_finder_finds_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_core_folder_holds_the_core() -> None:
    names = {p.name for p in core_files()}
    expected = {"flow.py", "flowcheck.py", "compile.py", "registry.py", "conversations.py",
                "unit.py", "intents.py", "ports.py", "errors.py", "clock.py", "text.py"}
    assert names >= expected, f"missing from engine/core: {expected - names}"


# -- (a) no core module imports beyond its folder, at any depth ----------------------------


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(ENGINE)))
def test_core_module_imports_only_stdlib_transitions_and_the_core(path: Path) -> None:
    name, is_package = module_of(path)
    violations = core_violations(path.read_text(encoding="utf-8"), name, is_package=is_package)
    assert violations == [], (
        f"{path.relative_to(REPO)} breaks the rule flows -> engine core <- adapters: "
        f"{violations}"
    )


# -- (b) importing the core loads nothing but the core --------------------------------------

_PROBE = """
import importlib, json, sys
before = set(sys.modules)
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def loaded_after_import(modules: list[str]) -> list[str]:
    """Import `modules` in a fresh interpreter; every module that got loaded."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules], cwd=REPO, capture_output=True, text=True,
        check=False, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_importing_the_core_loads_no_third_party_library_but_transitions() -> None:
    loaded = loaded_after_import([module_of(p)[0] for p in core_files()])
    tops = {name.split(".")[0] for name in loaded}
    foreign = sorted(t for t in tops - {"engine", "transitions", "six"}
                     if t not in sys.stdlib_module_names and not t.startswith("_"))
    assert foreign == []
    ours = sorted(n for n in loaded if n.startswith("engine") and not _within(n, "engine.core")
                  and n != "engine")
    assert ours == []


def test_import_probe_sees_an_io_library_when_one_is_imported() -> None:
    # Guards the probe above: an adapter does load sqlalchemy.
    assert "sqlalchemy" in loaded_after_import(["persistence.store"])


# -- (c) adapters never reach into the composition root; no cycles ---------------------------


def test_persistence_and_adapters_do_not_import_the_composition_root_or_the_cli() -> None:
    graph = import_graph(product_files())
    offenders = []
    for module, edges in graph.items():
        if module in COMPOSITION_ROOT or _within(module, "engine.cli") or module in (
                "engine", "engine.__main__"):
            continue
        for target in edges:
            if _within(target, "engine.cli") or (
                    target in COMPOSITION_ROOT and not _within(module, "engine.server")):
                offenders.append(f"{module} -> {target}")
    # The server's process object is built from the wiring; nothing else may be.
    assert offenders == []


def test_no_import_cycle_anywhere_in_the_product() -> None:
    cycle = find_cycle(import_graph(product_files()))
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


# -- (d) flows use only `from engine import ...` and the standard library -------------------


FLOW_FILES = sorted(FLOWS.glob("*.py"))


def test_there_is_at_least_the_trial_flow() -> None:
    assert FLOWS / "trial.py" in FLOW_FILES


@pytest.mark.parametrize("path", FLOW_FILES, ids=lambda p: p.name)
def test_flow_imports_only_engine_and_the_standard_library(path: Path) -> None:
    violations = flow_violations(path.read_text(encoding="utf-8"))
    assert violations == [], (
        f"flows/{path.name} may import only `from engine import ...` and the standard "
        f"library; found {violations}"
    )
