"""The dependency rule: flows -> engine core <- adapters (DESIGN.md, "Layout").

The core is every module in engine/ except the adapters listed below, so a new core
module is covered the day it is added. engine/channels/ is adapters as a whole.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENGINE = REPO / "engine"
FLOWS = REPO / "flows"

# Files in engine/ that do I/O or wire adapters; everything else there is the core.
# A new module is core until it is listed here: declaring an adapter is a decision.
ADAPTERS = frozenset({
    "bootstrap.py", "cli.py", "__main__.py", "diagram.py", "logs.py", "web.py",
    "timeouts.py", "outbox.py", "dispatcher.py", "monitoring.py", "scheduler.py",
    "stats.py", "app.py",
    "cli_ops.py",  # `tertulia sessions` / `stats`: click and persistence
    "service.py",  # the running process: scheduler, dispatcher, Twilio sender
    "lock.py",  # the scheduler lock: an flock on a file beside the database
    "batching.py",  # the single writer thread: group commit through persistence
})
# engine/ sub-packages, all adapters.
ADAPTER_PACKAGES = frozenset({"channels"})

# Third-party packages that do I/O (databases, HTTP, web, scheduling, terminals).
IO_PACKAGES = frozenset({
    "sqlalchemy", "twilio", "starlette", "uvicorn", "fastapi", "requests", "apscheduler",
    "alembic", "httpx", "prometheus_client", "click",
})
# Our own adapter packages.
OUR_ADAPTER_PACKAGES = frozenset({"persistence"})

# The modules the brief names as core; discovery must find at least these.
KNOWN_CORE = {
    "__init__.py", "flow.py", "flowcheck.py", "loader.py", "runtime.py", "unit.py",
    "intents.py", "ports.py", "errors.py", "config.py", "clock.py", "credentials.py",
}


def core_files() -> list[Path]:
    return sorted(p for p in ENGINE.glob("*.py") if p.name not in ADAPTERS)


def module_name(path: Path) -> str:
    return "engine" if path.name == "__init__.py" else f"engine.{path.stem}"


CORE_MODULES = [module_name(p) for p in core_files()]


def adapter_modules() -> set[str]:
    """engine.* module names that the core must never import."""
    names = {f"engine.{Path(name).stem}" for name in ADAPTERS if name != "__main__.py"}
    names |= {f"engine.{package}" for package in ADAPTER_PACKAGES}
    names.add("engine.__main__")
    return names


# -- the import scanner ------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    module: str  # the absolute dotted module name imported (or imported from)
    names: tuple[str, ...]  # for `from m import a, b`: ("a", "b"); empty for `import m`
    line: int

    def targets(self) -> list[str]:
        """Every dotted name this statement may load: `from engine import web` loads
        engine.web, so it is checked as such."""
        return [self.module, *(f"{self.module}.{name}" for name in self.names)]


def imports_of(source: str, module: str) -> list[Import]:
    """Every import in `source`, at any depth (function-level, TYPE_CHECKING, try)."""
    package = module if module == "engine" else module.rpartition(".")[0]
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


def core_violations(source: str, module: str) -> list[str]:
    """What a core module imports that breaks the rule, as `line: name` strings."""
    bad: list[str] = []
    adapters = adapter_modules()
    for imp in imports_of(source, module):
        top = imp.module.split(".")[0]
        if top in IO_PACKAGES or top in OUR_ADAPTER_PACKAGES:
            bad.append(f"{imp.line}: {imp.module}")
            continue
        hits = [t for t in imp.targets() if any(_within(t, a) for a in adapters)]
        if hits:
            bad.append(f"{imp.line}: {hits[0]}")
    return bad


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


# -- the scanner itself catches what it should --------------------------------------------


def test_scanner_flags_function_level_relative_and_from_package_imports() -> None:
    source = (
        "import os\n"
        "from engine.ports import Inbound\n"
        "def f():\n"
        "    import sqlalchemy.orm\n"
        "    from persistence.store import SqlStore\n"
        "from engine import web\n"
        "from . import bootstrap\n"
        "from .channels.console import ConsoleChat\n"
        "from twilio.rest import Client\n"
    )
    assert sorted(core_violations(source, "engine.runtime")) == [
        "4: sqlalchemy.orm", "5: persistence.store", "6: engine.web", "7: engine.bootstrap",
        "8: engine.channels.console", "9: twilio.rest",
    ]


def test_scanner_accepts_core_to_core_imports() -> None:
    source = "from engine.flow import Flow\nfrom . import ports\nimport transitions\n"
    assert core_violations(source, "engine.runtime") == []


def test_flow_scanner_rejects_submodules_of_engine_and_third_party() -> None:
    source = (
        "import re\nfrom engine import Flow\nfrom engine.flow import step\n"
        "import sqlalchemy\nfrom persistence import store\nimport engine\n"
    )
    assert sorted(flow_violations(source)) == [
        "3: engine.flow (step)", "4: sqlalchemy", "5: persistence (store)", "6: engine",
    ]


def test_discovery_treats_every_non_adapter_engine_module_as_core() -> None:
    names = {p.name for p in core_files()}
    assert names >= KNOWN_CORE, f"core modules missing from discovery: {KNOWN_CORE - names}"
    assert not names & ADAPTERS


# -- (a) importing the core loads no I/O library ------------------------------------------

_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
watched = set(json.loads({watched!r}))
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & watched)
print(json.dumps(loaded))
"""


def loaded_after_import(modules: list[str], watched: set[str]) -> list[str]:
    """Import `modules` in a fresh interpreter; which `watched` packages got loaded."""
    probe = _PROBE.format(watched=json.dumps(sorted(watched)))
    result = subprocess.run(
        [sys.executable, "-c", probe, *modules], cwd=REPO, capture_output=True, text=True,
        check=False, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_importing_every_core_module_loads_no_io_library_nor_adapter() -> None:
    watched = IO_PACKAGES | OUR_ADAPTER_PACKAGES
    assert loaded_after_import(CORE_MODULES, watched) == []


def test_import_probe_sees_an_io_library_when_one_is_imported() -> None:
    # Guards the probe above: an adapter does load sqlalchemy.
    assert "sqlalchemy" in loaded_after_import(["persistence.store"], {"sqlalchemy"})


def test_importing_the_core_loads_no_engine_adapter_module() -> None:
    probe = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]: importlib.import_module(name)\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('engine'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, *CORE_MODULES], cwd=REPO,
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    adapters = adapter_modules()
    assert sorted(m for m in loaded if any(_within(m, a) for a in adapters)) == []


# -- (b) no core module imports an adapter, at any depth -----------------------------------


@pytest.mark.parametrize("path", core_files(), ids=lambda p: p.name)
def test_core_module_imports_no_io_library_nor_adapter(path: Path) -> None:
    violations = core_violations(path.read_text(encoding="utf-8"), module_name(path))
    assert violations == [], (
        f"engine/{path.name} breaks the rule flows -> engine core <- adapters: {violations}"
    )


# -- (c) flows use only `from engine import ...` and the standard library -------------------


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
