"""A broken flow file that is not the default's: the ops commands an operator needs in
an incident keep working (with a warning naming the file); `serve` refuses, naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine.cli.test_cli import assert_one_line_error, db_rows, tertulia
from tests.support.booking import flows_folder, write_flow

BROKEN_SOURCE = "from engine import Flow\n\nclass Booking(Flow):\n    name = 'booking'\n    oops(\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A booking session left open, then its file broken; trial is the default."""
    flows = flows_folder(tmp_path)
    result = tertulia(tmp_path, "chat", "--phone", "+5491122223333", stdin="hola\n",
                      FLOWS_DIR=str(flows), DEFAULT_FLOW="booking")
    assert result.returncode == 0, result.stderr
    write_flow(flows, BROKEN_SOURCE)
    return flows


def run(tmp_path: Path, folder: Path, *args: str) -> tuple[str, str]:
    result = tertulia(tmp_path, *args, FLOWS_DIR=str(folder), DEFAULT_FLOW="trial")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout, result.stderr


def warned(stderr: str, folder: Path) -> bool:
    return any(line.startswith("warning: flow file skipped: ")
               and str(folder / "booking.py") in line for line in stderr.splitlines())


def test_read_only_ops_commands_warn_and_work(tmp_path: Path, folder: Path) -> None:
    listed, stderr = run(tmp_path, folder, "sessions")
    assert warned(stderr, folder)
    assert "booking" in listed

    shown, stderr = run(tmp_path, folder, "sessions", "show", "1")
    assert warned(stderr, folder) and "flow booking" in shown

    stats, stderr = run(tmp_path, folder, "stats")
    assert warned(stderr, folder) and "flow_removed: 0" in stats

    flows, stderr = run(tmp_path, folder, "flows")
    assert warned(stderr, folder) and flows.startswith("trial (default)")


def test_sessions_close_closes_a_session_whose_flow_file_is_broken(
    tmp_path: Path, folder: Path
) -> None:
    out, stderr = run(tmp_path, folder, "sessions", "close", "1")

    assert warned(stderr, folder)
    assert out.startswith("closed 1 session(s) 1 (admin")
    assert db_rows(tmp_path, "SELECT state, close_reason FROM sessions") == [
        {"state": "closed", "close_reason": "admin"}]


def test_serve_refuses_to_start_naming_the_broken_file(tmp_path: Path, folder: Path) -> None:
    result = tertulia(tmp_path, "serve", "--port", "0", FLOWS_DIR=str(folder),
                      DEFAULT_FLOW="trial")

    line = assert_one_line_error(result)
    assert str(folder / "booking.py") in line and "syntax error" in line
