"""What values a flow's texts can count on, read from the flow file's source.

A text's `{placeholder}` is filled from the session's context and the keywords a step
passes to `turn.move(...)` / `turn.stay(...)`. Reading the source (not running it) finds
both: the keywords of those calls, and the keys a step stores with
`turn.context["key"] = ...`, `.setdefault("key", ...)` or `.update(key=...)`.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap

from engine.core.flow import ENGINE_VALUES, Flow

__all__ = ["provided_values"]


def provided_values(cls: type[Flow]) -> set[str] | None:
    """Every value name the flow can provide to its texts; None when its source is not
    readable or a call passes `**values`, so nobody can tell."""
    tree = _source_tree(cls)
    if tree is None:
        return None
    names: set[str] = set(ENGINE_VALUES)
    for node in ast.walk(tree):
        found = _from_node(node)
        if found is None:
            return None
        names |= found
    return names


def _source_tree(cls: type[Flow]) -> ast.AST | None:
    # The whole module: helpers beside the class may write the context too.
    module = sys.modules.get(cls.__module__)
    try:
        source = inspect.getsource(module) if module is not None else inspect.getsource(cls)
        return ast.parse(textwrap.dedent(source))
    except (OSError, TypeError, SyntaxError):
        return None


def _from_node(node: ast.AST) -> set[str] | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return _from_call(node, node.func)
    if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {key for target in targets if (key := _context_key(target)) is not None}
    return set()


def _from_call(call: ast.Call, func: ast.Attribute) -> set[str] | None:
    if func.attr in ("move", "stay") or (func.attr == "update" and _is_context(func.value)):
        if any(kw.arg is None for kw in call.keywords):
            return None
        names = {str(kw.arg) for kw in call.keywords}
        if func.attr == "update":
            for arg in call.args:
                if not isinstance(arg, ast.Dict):
                    return None
                names |= {k.value for k in arg.keys
                          if isinstance(k, ast.Constant) and isinstance(k.value, str)}
        return names
    if func.attr == "setdefault" and _is_context(func.value) and call.args:
        first = call.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return {first.value}
    return set()


def _context_key(target: ast.expr) -> str | None:
    if isinstance(target, ast.Subscript) and _is_context(target.value):
        key = target.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return key.value
    return None


def _is_context(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "context") or (
        isinstance(node, ast.Name) and node.id == "context")
