"""The core knows no particular flow (DESIGN.md, "Layout").

Close reasons beyond the engine's own, and whatever a credential provider receives,
come from the flow: no module under engine/core/ names the trial flow's reasons or
reads a flow's context keys such as "name" or "email". Checked by folder, on the
string constants of the code, so a module added there tomorrow is covered too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.paths import REPO

CORE = REPO / "engine" / "core"

# Strings that are the trial flow's, not the engine's.
FLOW_REASONS = ("credentials_delivered", "trial_refused")
FLOW_KEYS = frozenset({"name", "email"})


def flow_strings(source: str) -> list[tuple[int, str]]:
    """(line, string) for each place that names a flow's reason, or reads a flow's
    context key: `x["name"]`, `x.get("email")`, `"name" in x`.

    "name" and "email" elsewhere are fine: the intent detector's answer kinds (a step
    may say it expects a name or an email) are the engine's own vocabulary.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and any(reason in node.value for reason in FLOW_REASONS):
            found.append((node.lineno, node.value))
        for key in _keys_read(node):
            found.append((key.lineno, key.value))
    return sorted(found)


def _keys_read(node: ast.AST) -> list[ast.Constant]:
    candidates: list[ast.expr] = []
    if isinstance(node, ast.Subscript):
        candidates.append(node.slice)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr in ("get", "pop", "setdefault") and node.args:
        candidates.append(node.args[0])
    elif isinstance(node, ast.Compare) and any(isinstance(op, ast.In | ast.NotIn)
                                               for op in node.ops):
        candidates.append(node.left)
    return [c for c in candidates
            if isinstance(c, ast.Constant) and c.value in FLOW_KEYS]


def core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_the_core_folder_is_found() -> None:
    names = {p.name for p in core_modules()}
    assert {"conversations.py", "flowcheck.py", "ports.py", "unit.py"} <= names


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_no_core_module_names_a_flow_reason_or_context_key(path: Path) -> None:
    found = flow_strings(path.read_text(encoding="utf-8"))
    assert found == [], f"{path.relative_to(CORE.parent.parent)} names the flow's {found}"


def test_the_scanner_finds_what_it_looks_for() -> None:
    # Guards the test above: these are the shapes the core used to have.
    source = (
        'name = str(session.context.get("name", ""))\n'
        "email = context['email']\n"
        'CLOSE = {"credentials_delivered": "closed"}\n'
        'detail = f"closed as trial_refused for {phone}"\n'
        'flow_name = flow.name  # an attribute, not a context key: fine\n'
        '"""A docstring that mentions a name and an email is fine too."""\n'
        'if "name" not in turn.context: pass\n'
        'EXPECTS = ("name", "email")  # answer kinds, not keys: fine\n'
    )
    assert flow_strings(source) == [
        (1, "name"), (2, "email"), (3, "credentials_delivered"),
        (4, "closed as trial_refused for "), (7, "name"),
    ]
