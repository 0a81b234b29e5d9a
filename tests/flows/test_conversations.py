"""The shipped flows' own conversation tests (flows/*.tests), one pytest test per case,
run by the same runner as `tertulia flows test`."""

from __future__ import annotations

import pytest

from engine.flowfiles import flow_files, load_flows
from engine.flowtests import parse, run_case
from engine.flowtests.parse import Case, Suite
from tests.support.paths import FLOWS

SUITES = [parse(path) for path in sorted(FLOWS.glob("*.tests"))]
CASES = [pytest.param(suite, case, id=f"{suite.path.name}::{case.title}")
         for suite in SUITES for case in suite.cases]
SHIPPED = load_flows(FLOWS, "trial")


@pytest.mark.parametrize(("suite", "case"), CASES)
def test_shipped_conversation(suite: Suite, case: Case) -> None:
    result = run_case(suite, case, SHIPPED)

    assert result.failure is None, result.failure


def test_every_shipped_flow_ships_its_conversation_tests() -> None:
    tested = {suite.flow for suite in SUITES}
    defined = {flow.name for flow in SHIPPED}

    assert {"trial", "booking"} <= defined
    assert tested == defined
    assert len(flow_files(FLOWS)) == len(SUITES)
