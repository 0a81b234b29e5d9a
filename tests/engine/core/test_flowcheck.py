"""A flow author's mistakes fail loading with one message naming the file, the place and the fix.

Each file in tests/engine/core/broken_flows/ is a minimal flow with one mistake (multi_mistake.py
has three). `tertulia flows check` (check_files) reports every problem; loading the folder
(load_flows, as `serve` and `chat` do) stops at the first with the same message.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.core.errors import FlowDefinitionError, FlowNotFound
from engine.core.flow import BASE_TEXTS
from engine.core.ports import Inbound
from engine.flowfiles import check_files, flow_files, load_flows
from engine.wiring import Wiring
from tests.support.paths import FLOWS

BROKEN = Path(__file__).resolve().parent / "broken_flows"

# file -> what its one problem must say, besides the file's path and "Fix:".
MISTAKES: dict[str, tuple[str, ...]] = {
    "unreachable_state.py": ("state 'orphan'", "unreachable from 'greeting'",
                             "'dest': 'orphan'"),
    "dead_end.py": ("state 'limbo'", "no transition leads from it to a final state"),
    "no_timeout_final.py": ("flow 'no_timeout_final'", "no 'timeout' final state",
                            "add 'timeout' to both states and final"),
    "no_cancelled_final.py": ("flow 'no_cancelled_final'", "no 'cancelled' final state",
                              "add 'cancelled' to both states and final"),
    "unknown_source_state.py": ("trigger 'restart'", "unknown state 'asknig'", "'asking'"),
    "unknown_dest_state.py": ("trigger 'accept'", "unknown state 'askin'", "'asking'"),
    "missing_say_text.py": ("trigger 'accept'", "text 'ask_nmae' is referenced but missing",
                            "add 'ask_nmae' to texts"),
    "missing_stay_text.py": ("step offer", "state 'greeting'",
                             "text 'missing_key' is referenced but missing",
                             "add 'missing_key' to texts"),
    "step_for_unknown_state.py": ("step ghost", "state 'nonexistent'", "does not exist",
                                  "'greeting'"),
    "open_state_without_step.py": ("state 'asking'", "no step function", "@step('asking')"),
    "final_transition_without_reason.py": ("trigger 'accept'", "final state 'closed'",
                                           "reason None", "'goodbye'"),
    "final_transition_wrong_reason.py": ("trigger 'accept'", "final state 'closed'",
                                         "reason 'timeout'", "'goodbye'"),
    "syntax_error.py": ("line 34", "syntax error", "'return' outside function",
                        "correct the Python syntax"),
    "raises_at_import.py": ("importing it raised ImportError", "'Flw'",
                            "fix the error at the top level of the file"),
    "no_flow_subclass.py": ("defines no Flow subclass", "class MyFlow(Flow)"),
    "unprovided_placeholder.py": ("texts['done']", "placeholder {hour} has no value",
                                  "hour=", "turn.context['hour']"),
    "unknown_vocabulary_intent.py": ("vocabulary['afirmacon']", "not an intent",
                                     "'afirmacion'"),
    "timeout_bad_trigger.py": ("timeouts['greeting']", "trigger 'remnd'",
                               "does not leave state 'greeting'", "'accept', 'expire'"),
    "renamed_to_unknown.py": ("renamed['welcome']", "'greting'", "not an open state",
                              "['greeting']"),
}


def _copy_alone(name: str, tmp_path: Path) -> Path:
    """A FLOWS_DIR holding only this broken file."""
    flows_dir = tmp_path / "flows"
    flows_dir.mkdir()
    return Path(shutil.copy(BROKEN / name, flows_dir / name))


def test_every_broken_fixture_is_in_the_table() -> None:
    fixtures = {p.name for p in BROKEN.glob("*.py")} - {"conftest.py", "multi_mistake.py"}
    assert fixtures == set(MISTAKES)


@pytest.mark.parametrize(("name", "expected"), MISTAKES.items(), ids=MISTAKES.keys())
def test_flows_check_names_file_place_and_fix(name: str, expected: tuple[str, ...]) -> None:
    path = BROKEN / name

    problems = check_files([path])

    assert len(problems) == 1, [str(p) for p in problems]
    message = str(problems[0])
    assert message.startswith(f"{path}: ")
    assert "Fix: " in message
    for fragment in expected:
        assert fragment in message
    assert "\n" not in message  # one line per problem in `tertulia flows check`


@pytest.mark.parametrize(("name", "expected"), MISTAKES.items(), ids=MISTAKES.keys())
def test_loading_the_folder_fails_with_the_same_message(
    name: str, expected: tuple[str, ...], tmp_path: Path
) -> None:
    copy = _copy_alone(name, tmp_path)
    (checked,) = check_files([BROKEN / name])

    with pytest.raises(FlowDefinitionError) as raised:
        load_flows(copy.parent, "trial")

    error = raised.value
    assert str(error) == str(checked).replace(str(BROKEN / name), str(copy), 1)
    assert (error.file, error.where, error.problem, error.fix) == (
        str(copy), checked.where, checked.problem, checked.fix,
    )
    for fragment in expected:
        assert fragment in str(error)


# Applying the fix the message gives makes each of these load: they are otherwise valid.
FIXES: dict[str, tuple[str, str]] = {
    "unknown_source_state.py": ('"source": "asknig"', '"source": "asking"'),
    "unknown_dest_state.py": ('"dest": "askin"', '"dest": "asking"'),
    "missing_say_text.py": ('"say": "ask_nmae"', '"say": "ask_name"'),
    "missing_stay_text.py": ('turn.stay("missing_key")', "turn.not_understood()"),
    "final_transition_without_reason.py": ('"say": "done"}', '"say": "done", "reason": "goodbye"}'),
    "final_transition_wrong_reason.py": ('"reason": "timeout"', '"reason": "goodbye"'),
    "raises_at_import.py": ("Flw", "Flow"),
    "no_timeout_final.py": ('"cancelled"]', '"cancelled", "timeout"]'),
    "no_cancelled_final.py": ('"timeout"]', '"timeout", "cancelled"]'),
    "unprovided_placeholder.py": ('people=2', 'hour="21:00"'),
    "unknown_vocabulary_intent.py": ('"afirmacon"', '"afirmacion"'),
    "timeout_bad_trigger.py": ('"remnd"', '"accept"'),
    "renamed_to_unknown.py": ('"greting"', '"greeting"'),
}


@pytest.mark.parametrize(("name", "fix"), FIXES.items(), ids=FIXES.keys())
def test_applying_the_fix_makes_the_flow_load(
    name: str, fix: tuple[str, str], tmp_path: Path
) -> None:
    copy = _copy_alone(name, tmp_path)
    source = copy.read_text(encoding="utf-8")
    assert fix[0] in source
    copy.write_text(source.replace(fix[0], fix[1]), encoding="utf-8")

    assert check_files([copy]) == []
    registry = load_flows(copy.parent, Path(name).stem)
    assert registry.default.name == Path(name).stem


def test_every_real_flow_loads_and_checks_clean() -> None:
    files = flow_files(FLOWS)
    assert FLOWS / "trial.py" in files

    registry = load_flows(FLOWS, "trial")

    assert check_files(files) == []
    assert {Path(flow.file) for flow in registry} == set(files)
    assert registry.default.name == "trial"


def test_a_file_with_several_mistakes_reports_all_of_them(tmp_path: Path) -> None:
    path = BROKEN / "multi_mistake.py"

    problems = [str(p) for p in check_files([path])]

    assert len(problems) == 3, problems
    assert all(p.startswith(f"{path}: ") and "Fix: " in p for p in problems)
    say, ghost, no_step = problems  # in the order a reader of the file meets them
    assert "trigger 'accept'" in say and "text 'ask_nmae'" in say
    assert "step ghost" in ghost and "'nonexistent'" in ghost
    assert "state 'asking'" in no_step and "@step('asking')" in no_step
    # Loading stops at the first one.
    copy = _copy_alone("multi_mistake.py", tmp_path)
    with pytest.raises(FlowDefinitionError, match="text 'ask_nmae' is referenced"):
        load_flows(copy.parent, "multi_mistake")


def test_check_files_reports_every_file_it_is_given() -> None:
    paths = [BROKEN / "unreachable_state.py", BROKEN / "multi_mistake.py",
             BROKEN / "syntax_error.py", FLOWS / "trial.py"]

    problems = check_files(paths)

    assert [p.file for p in problems] == [str(paths[0])] + [str(paths[1])] * 3 + [str(paths[2])]


def test_default_flow_that_no_file_defines_lists_the_known_flows() -> None:
    with pytest.raises(FlowNotFound) as raised:
        load_flows(FLOWS, "nope")

    # Whatever else flows/ holds, the message lists every flow it defines.
    known = ", ".join(sorted(flow.name for flow in load_flows(FLOWS, "trial")))
    assert str(raised.value) == f"flow 'nope' is not defined. Known flows: {known}."
    assert "trial" in known


def test_two_files_defining_the_same_flow_name_names_both(tmp_path: Path) -> None:
    shutil.copy(FLOWS / "trial.py", tmp_path / "trial.py")
    shutil.copy(FLOWS / "trial.py", tmp_path / "trial_copy.py")

    with pytest.raises(FlowDefinitionError) as raised:
        load_flows(tmp_path, "trial")

    message = str(raised.value)
    assert str(tmp_path / "trial.py") in message
    assert str(tmp_path / "trial_copy.py") in message
    assert "flow 'trial'" in message and "Fix: give each flow its own name" in message


def test_flows_check_reports_two_files_defining_the_same_flow_name(tmp_path: Path) -> None:
    shutil.copy(FLOWS / "trial.py", tmp_path / "trial.py")
    shutil.copy(FLOWS / "trial.py", tmp_path / "trial_copy.py")

    problems = [str(p) for p in check_files(flow_files(tmp_path))]

    assert problems == [
        f"{tmp_path / 'trial_copy.py'}: flow 'trial': the name is also used in "
        f"{tmp_path / 'trial.py'}. Fix: give each flow its own name"
    ]


def test_missing_flows_dir_is_named_with_a_fix(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_folder"

    with pytest.raises(FlowDefinitionError) as raised:
        load_flows(missing, "trial")

    message = str(raised.value)
    assert str(missing) in message and "FLOWS_DIR" in message and "Fix: " in message


def test_files_starting_with_underscore_are_skipped(tmp_path: Path) -> None:
    shutil.copy(FLOWS / "trial.py", tmp_path / "trial.py")
    (tmp_path / "_helpers.py").write_text("GREETING = 'hola'\n", encoding="utf-8")

    assert flow_files(tmp_path) == [tmp_path / "trial.py"]
    assert [flow.name for flow in load_flows(tmp_path, "trial")] == ["trial"]


def test_a_value_missing_at_run_time_names_the_file_the_text_and_the_placeholder(
    tmp_path: Path,
) -> None:
    # The checker cannot see values passed as **kwargs, so such a flow loads.
    copy = _copy_alone("unprovided_placeholder.py", tmp_path)
    source = copy.read_text(encoding="utf-8")
    copy.write_text(source.replace("people=2", "**{'people': 2}"), encoding="utf-8")
    flow = load_flows(copy.parent, "unprovided_placeholder").default

    with pytest.raises(FlowDefinitionError) as raised:
        flow.render("done", {"people": 2})

    assert str(raised.value) == (
        f"{copy}: text 'done': placeholder {{hour}} has no value. Fix: pass it to "
        "move()/stay() as a keyword, or store it in turn.context")


def test_a_conversation_that_hits_a_missing_value_apologises_and_logs_where(
    tmp_path: Path, make_wiring: Callable[..., Wiring], caplog: pytest.LogCaptureFixture,
) -> None:
    copy = _copy_alone("unprovided_placeholder.py", tmp_path)
    source = copy.read_text(encoding="utf-8")
    copy.write_text(source.replace("people=2", "**{'people': 2}"), encoding="utf-8")
    wiring = make_wiring(FLOWS_DIR=str(copy.parent), DEFAULT_FLOW="unprovided_placeholder")
    say = wiring.conversations.handle

    say(Inbound(channel="whatsapp", phone="+5491100000001", text="hola", message_id="SM1"))
    with caplog.at_level(logging.ERROR, logger="tertulia.conversations"):
        replies = say(Inbound(channel="whatsapp", phone="+5491100000001", text="sí",
                              message_id="SM2"))

    assert [o.body for o in replies] == [BASE_TEXTS["apology"]]
    assert f"{copy}: text 'done': placeholder {{hour}} has no value" in caplog.text
