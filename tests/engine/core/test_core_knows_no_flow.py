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
    """(line, string) for each string constant that names a flow's reason or key."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if text in FLOW_KEYS or any(reason in text for reason in FLOW_REASONS):
                found.append((node.lineno, text))
    return sorted(found)


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
    )
    assert flow_strings(source) == [
        (1, "name"), (2, "email"), (3, "credentials_delivered"),
        (4, "closed as trial_refused for "),
    ]
