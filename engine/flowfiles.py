"""Find and load flows by path from FLOWS_DIR, so an edit takes effect on the next start."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from engine.core.compile import compile_flow
from engine.core.errors import FlowDefinitionError
from engine.core.flow import CompiledFlow, Flow
from engine.core.flowcheck import check_flow
from engine.core.registry import FlowRegistry

__all__ = [
    "check_files", "default_flow_problems", "flow_files", "load_flows", "load_flows_leniently",
]


def flow_files(flows_dir: Path) -> list[Path]:
    """Every `*.py` in the folder, except private helpers named `_*.py`."""
    if not flows_dir.is_dir():
        raise FlowDefinitionError(
            str(flows_dir), "FLOWS_DIR", "the folder does not exist",
            "point FLOWS_DIR at the folder that holds your flow files",
        )
    return sorted(p for p in flows_dir.glob("*.py") if not p.name.startswith("_"))


def load_flows(flows_dir: Path, default_name: str) -> FlowRegistry:
    """Compile every flow in `flows_dir`; the first problem found stops loading."""
    flows: dict[str, CompiledFlow] = {}
    for path in flow_files(flows_dir):
        for cls in _flow_classes(path):
            if cls.name in flows:
                raise _duplicate(path, cls.name, flows[cls.name].file)
            flows[cls.name] = compile_flow(cls, str(path))
    registry = FlowRegistry(flows, default_name)
    registry.get(default_name)  # fail at start, not at the first message
    return registry


def load_flows_leniently(
    flows_dir: Path, default_name: str
) -> tuple[FlowRegistry, list[FlowDefinitionError]]:
    """Every flow that loads, and the problems of the files skipped, for the ops commands:
    during an incident a broken non-default flow must not lock the operator out. Only
    the default flow failing stops them (with that file's problem)."""
    flows: dict[str, CompiledFlow] = {}
    problems: list[FlowDefinitionError] = []
    for path in flow_files(flows_dir):
        try:
            compiled = [compile_flow(cls, str(path)) for cls in _flow_classes(path)]
        except FlowDefinitionError as exc:
            problems.append(exc)
            continue
        for flow in compiled:
            if flow.name in flows:
                problems.append(_duplicate(path, flow.name, flows[flow.name].file))
            else:
                flows[flow.name] = flow
    if default_name not in flows and problems:
        raise problems[0]
    registry = FlowRegistry(flows, default_name)
    registry.get(default_name)
    return registry, problems


def check_files(paths: Iterable[Path]) -> list[FlowDefinitionError]:
    """Every problem in the given files, for `tertulia flows check`."""
    problems: list[FlowDefinitionError] = []
    defined: dict[str, Path] = {}
    for path in paths:
        try:
            classes = _flow_classes(path)
        except FlowDefinitionError as exc:
            problems.append(exc)
            continue
        for cls in classes:
            problems.extend(check_flow(cls, str(path)))
            if isinstance(getattr(cls, "name", None), str) and cls.name in defined:
                problems.append(_duplicate(path, cls.name, defined[cls.name]))
            defined.setdefault(getattr(cls, "name", ""), path)
    return problems


def default_flow_problems(paths: Iterable[Path], default_name: str) -> list[FlowDefinitionError]:
    """A problem if no file in `paths` defines the flow DEFAULT_FLOW names."""
    names: set[str] = set()
    for path in paths:
        try:
            names.update(str(getattr(cls, "name", "")) for cls in _flow_classes(path))
        except FlowDefinitionError:
            continue  # reported by check_files already
    if default_name in names:
        return []
    return [FlowDefinitionError(
        "DEFAULT_FLOW", repr(default_name), "no file defines a flow with that name",
        f"set DEFAULT_FLOW to one of {sorted(names)}",
    )]


def _duplicate(path: Path, name: str, first: Path | str) -> FlowDefinitionError:
    return FlowDefinitionError(
        str(path), f"flow {name!r}", f"the name is also used in {first}",
        "give each flow its own name",
    )


def _flow_classes(path: Path) -> list[type[Flow]]:
    module = _import(path)
    classes = [
        obj for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Flow) and obj is not Flow and obj.__module__ == module.__name__
    ]
    if not classes:
        raise FlowDefinitionError(
            str(path), "module", "it defines no Flow subclass",
            "define `class MyFlow(Flow): ...`, or rename the file to start with '_'",
        )
    return classes


def _import(path: Path) -> ModuleType:
    name = f"tertulia_flows.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FlowDefinitionError(str(path), "module", "it cannot be imported", "name it *.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # inspect.getsource needs to find the module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise FlowDefinitionError(
            str(path), f"line {exc.lineno}", f"syntax error: {exc.msg}", "correct the Python syntax"
        ) from None
    except Exception as exc:
        sys.modules.pop(name, None)
        raise FlowDefinitionError(
            str(path), "module", f"importing it raised {type(exc).__name__}: {exc}",
            "fix the error at the top level of the file",
        ) from None
    return module
