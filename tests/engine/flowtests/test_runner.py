"""The conversation test runner as a flow author meets it: what a failure shows, how a
`wait:` line drives timeouts, and a file it cannot read."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.errors import FlowTestError
from engine.flowfiles import load_flows
from engine.flowtests import parse, run_suite
from tests.support.paths import FLOWS

SHIPPED = load_flows(FLOWS, "trial")


def run(tmp_path: Path, text: str) -> list[str | None]:
    path = tmp_path / "booking.tests"
    path.write_text(text, encoding="utf-8")
    return [result.failure for result in run_suite(parse(path), SHIPPED)]


def test_a_failure_shows_the_conversation_so_far_and_the_first_difference(
    tmp_path: Path,
) -> None:
    [failure] = run(tmp_path, "== picks a day\n> hola\n< @greeting\n> [Barba]\n"
                              "< Buenísimo: Corte. ¿Qué día te queda bien?\n> 1\n< @confirm\n")

    assert failure is not None
    head, difference = failure.split("first difference:")
    assert head.startswith(f"{tmp_path / 'booking.tests'}:5: case 'picks a day'")
    assert "    > hola\n    < ¡Hola! 💈 Soy el asistente" in head
    assert "      1. Corte\n      2. Barba\n      3. Color\n    > [Barba]\n" in head
    assert "< Buenísimo: Barba." in head and "> 1" not in head
    assert "Buenísimo: Corte." in difference and "but it said" in difference
    assert difference.rstrip().endswith("Buenísimo: Barba. ¿Qué día te queda bien?")


def test_a_bot_message_the_test_does_not_list_fails(tmp_path: Path) -> None:
    [failure] = run(tmp_path, "== says more\n> hola\n> corte\n< @ask_day\n")

    assert failure is not None
    assert ":3: case 'says more'" in failure
    assert "the bot also said\n      ¡Hola! 💈" in failure


def test_wait_runs_the_timeout_only_once_the_clock_reaches_it(tmp_path: Path) -> None:
    early, due = run(tmp_path, "timeout: 3m\n"
                               "== early\n> hola\n< @greeting\nwait: 179s\nstate: service\n"
                               "== due\n> hola\n< @greeting\nwait: 179s\nwait: 1s\n"
                               "< @timeout_notice\nstate: timeout (timeout)\n")

    assert early is None
    assert due is None


def test_a_state_that_differs_names_both(tmp_path: Path) -> None:
    [failure] = run(tmp_path, "== closes\n> hola\n< @greeting\nwait: 3m\n< @timeout_notice\n"
                              "state: service\n")

    assert failure is not None
    assert "expected state service, but the session is in timeout (timeout)" in failure


def test_a_tap_on_a_choice_not_offered_names_the_offered_ones(tmp_path: Path) -> None:
    [failure] = run(tmp_path, "== taps\n> hola\n< @greeting\n> [Peinado]\n")

    assert failure is not None
    assert "no offered choice is titled 'Peinado'; offered: Corte | Barba | Color" in failure


@pytest.mark.parametrize(("text", "line", "problem"), [
    ("== a\n> hola\nwait: soon\n", 3, "wait 'soon' is not a duration"),
    ("> hola\n", 1, "a message comes before any case"),
    ("== a\nsay hola\n", 2, "'say hola' is not a line of the format"),
    ("== a\n> hola\ntimeout: 3m\n", 3, "'timeout:' comes after the first case"),
    ("# nothing\n", 1, "it has no case"),
])
def test_a_file_it_cannot_read_names_the_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = tmp_path / "x.tests"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(FlowTestError) as raised:
        parse(path)

    assert str(raised.value).startswith(f"{path}:{line}: {problem}. Fix: ")


def test_the_readme_example_passes(tmp_path: Path) -> None:
    readme = (FLOWS.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Conversation tests"):]
    example = section[section.index("```text\n") + 8:section.index("```\n")]
    assert "== an idle user is warned, then timed out" in example

    assert run(tmp_path, example) == [None, None]
