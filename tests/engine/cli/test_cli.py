"""The `tertulia` command as users run it: real subprocesses, a real SQLite file, piped stdin.

Every command runs from an empty working directory with DATABASE_URL and FLOWS_DIR set,
and what ops read afterwards is checked with plain sqlite3.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import BROKEN_FLOWS as BROKEN
from tests.support.paths import FLOWS

DEFAULT_PHONE = "+5491100000000"
HAPPY_PATH = "hola\nquiero la prueba\nAna Díaz\nana@mail.com\n"
# Settings tertulia reads: a developer's shell must not leak into these runs.
_OURS = re.compile(
    r"^(DATABASE_URL|FLOWS_DIR|DEFAULT_FLOW|SESSION_\w+|SWEEP_\w+|STATS_\w+|TRIAL_\w+"
    r"|CREDENTIAL_PROVIDER|INTENT_DETECTOR|TWILIO_\w+|PUBLIC_BASE_URL|OUTBOX_\w+|LOG_LEVEL|LOG_FORMAT"
    r"|SQLITE_\w+)$"
)


def tertulia(
    tmp_path: Path, *args: str, stdin: str = "", command: list[str] | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not _OURS.match(k)}
    environ.update(DATABASE_URL=f"sqlite:///{tmp_path / 't.db'}", FLOWS_DIR=str(FLOWS))
    environ.update(env)
    return subprocess.run(
        [*(command or [sys.executable, "-m", "engine"]), *args], cwd=tmp_path, env=environ,
        input=stdin, capture_output=True, text=True, encoding="utf-8", timeout=120,
        check=False,
    )


def db_rows(tmp_path: Path, sql: str, *params: Any) -> list[dict[str, Any]]:
    """What ops see with sqlite3 on the database file."""
    with closing(sqlite3.connect(tmp_path / "t.db")) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, params)]


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- chat ----------------------------------------------------------------------------------


def test_scripted_chat_delivers_credentials_closes_and_redacts_the_password(
    tmp_path: Path,
) -> None:
    result = tertulia(tmp_path, "chat", stdin=HAPPY_PATH)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Traceback" not in result.stderr
    assert out.startswith(f"tertulia chat · flujo trial · {DEFAULT_PHONE}\n")
    assert "🤖 ¡Hola! 👋 Soy el asistente de Tertulia." in out
    assert "[nueva sesión #1: greeting]" in out
    assert "🤖 ¡Genial! Para armar tu cuenta, ¿cómo te llamás?" in out
    assert "[greeting → trial_request]" in out
    assert "Gracias, Ana Díaz." in out
    assert "Usuario: ana" in out
    assert re.search(r"\[\w+ → closed \(credentials_delivered\)\]", out)
    assert out.rstrip("\n").endswith("¡Hasta luego!")
    # The order the user lives it in.
    assert (out.index("¿cómo te llamás?") < out.index("[greeting → trial_request]")
            < out.index("Usuario:") < out.index("(credentials_delivered)")
            < out.index("¡Hasta luego!"))
    password = re.search(r"Contraseña: (\S+)", out)
    assert password is not None and "•" not in password.group(1)

    (session,) = db_rows(tmp_path, "SELECT * FROM sessions")
    assert session["channel"] == "console" and session["phone"] == DEFAULT_PHONE
    assert (session["flow"], session["state"], session["close_reason"]) == (
        "trial", "closed", "credentials_delivered")
    assert session["closed_at"] is not None
    bodies = [m["body"] for m in db_rows(tmp_path, "SELECT body FROM messages")]
    assert not any(password.group(1) in body for body in bodies)
    assert any("Contraseña: ••••••••" in body for body in bodies)
    assert password.group(1) not in str(db_rows(tmp_path, "SELECT * FROM trials"))
    inbound = db_rows(tmp_path, "SELECT body, channel FROM messages WHERE direction = 'in' "
                      "ORDER BY id")
    assert inbound == [{"body": b, "channel": "console"} for b in HAPPY_PATH.splitlines()]


def test_chat_state_reset_and_quit_commands(tmp_path: Path) -> None:
    script = "/state\nhola\n/state\n/foo\n/reset\n/state\nhola\n/quit\nquiero la prueba\n"

    result = tertulia(tmp_path, "chat", stdin=script)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[sin sesión abierta: tu próximo mensaje empieza una nueva]" in out
    assert re.search(r"\[sesión #1 · flujo trial · estado greeting · vence en \d+ s\]", out)
    assert "Comando desconocido: /foo." in out
    assert "[sesión reiniciada: tu próximo mensaje empieza de cero]" in out
    assert "[nueva sesión #2: greeting]" in out
    assert out.count("🤖 ¡Hola! 👋") == 2
    assert "¿cómo te llamás?" not in out  # "quiero la prueba" came after /quit
    assert out.rstrip("\n").endswith("¡Hasta luego!")

    sessions = db_rows(tmp_path, "SELECT id, state, closed_at, close_reason FROM sessions "
                       "ORDER BY id")
    assert [(s["id"], s["state"], s["close_reason"]) for s in sessions] == [
        (1, "closed", "admin"), (2, "greeting", None)]
    assert sessions[1]["closed_at"] is None
    inbound = db_rows(tmp_path, "SELECT session_id, body FROM messages WHERE direction = 'in' "
                      "ORDER BY id")
    assert inbound == [{"session_id": 1, "body": "hola"}, {"session_id": 2, "body": "hola"}]
    # /reset closes quietly: no "Cerramos esta conversación" notice was queued or shown.
    assert "Cerramos esta conversación" not in out
    assert not db_rows(tmp_path, "SELECT id FROM messages WHERE body LIKE 'Cerramos esta%'")


def test_chat_rejects_a_phone_that_is_not_e164(tmp_path: Path) -> None:
    result = tertulia(tmp_path, "chat", "--phone", "11-5555-1234", stdin="hola\n")

    assert result.returncode == 2
    assert "'11-5555-1234'" in result.stderr and "E.164" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "t.db").exists() or not db_rows(tmp_path, "SELECT * FROM sessions")


def test_chat_talks_as_the_given_phone(tmp_path: Path) -> None:
    result = tertulia(tmp_path, "chat", "--phone", "+5491199998888", stdin="hola\n")

    assert result.returncode == 0, result.stderr
    assert "· +5491199998888" in result.stdout.splitlines()[0]
    sessions = db_rows(tmp_path, "SELECT channel, phone, state FROM sessions")
    assert sessions == [{"channel": "console", "phone": "+5491199998888", "state": "greeting"}]


def test_chat_with_a_missing_flows_dir_fails_on_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no_flows_here"

    result = tertulia(tmp_path, "chat", stdin="hola\n", FLOWS_DIR=str(missing))

    line = assert_one_line_error(result)
    assert "FLOWS_DIR" in line and str(missing) in line and "Fix:" in line


def test_chat_with_an_unknown_default_flow_fails_on_one_line(tmp_path: Path) -> None:
    result = tertulia(tmp_path, "chat", stdin="hola\n", DEFAULT_FLOW="nope")

    line = assert_one_line_error(result)
    assert "'nope'" in line and "Known flows: " in line
    assert "trial" in line.split("Known flows: ")[1].rstrip(".").split(", ")


# -- flows ---------------------------------------------------------------------------------


def test_flows_lists_the_default_flow(tmp_path: Path) -> None:
    result = tertulia(tmp_path, "flows")

    assert result.returncode == 0, result.stderr
    (line,) = [ln for ln in result.stdout.splitlines() if ln.startswith("trial")]
    assert line.startswith("trial (default)\t")
    assert str(FLOWS / "trial.py") in line
    assert "greeting, trial_request, credentials, closed, timeout, cancelled" in line


def test_flows_check_passes_on_the_real_flows(tmp_path: Path) -> None:
    result = tertulia(tmp_path, "flows", "check")

    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert result.stderr == ""


def test_flows_check_prints_one_line_per_problem_naming_each_file(tmp_path: Path) -> None:
    files = [BROKEN / "unreachable_state.py", BROKEN / "dead_end.py"]

    result = tertulia(tmp_path, "flows", "check", *map(str, files))

    assert result.returncode == 1
    assert "OK" not in result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    unreachable, dead_end = lines
    assert unreachable.startswith(f"{files[0]}: state 'orphan': ") and "Fix:" in unreachable
    assert dead_end.startswith(f"{files[1]}: state 'limbo': ") and "Fix:" in dead_end


def test_flows_check_reports_every_mistake_of_one_file(tmp_path: Path) -> None:
    path = BROKEN / "multi_mistake.py"

    result = tertulia(tmp_path, "flows", "check", str(path))

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, result.stderr
    assert all(line.startswith(f"{path}: ") and "Fix:" in line for line in lines)


def test_flows_check_without_arguments_checks_flows_dir(tmp_path: Path) -> None:
    flows_dir = tmp_path / "flows"
    flows_dir.mkdir()
    shutil.copy(FLOWS / "trial.py", flows_dir / "trial.py")
    shutil.copy(BROKEN / "syntax_error.py", flows_dir / "syntax_error.py")

    result = tertulia(tmp_path, "flows", "check", FLOWS_DIR="flows")  # relative to the cwd

    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "syntax_error.py: line 34: syntax error" in line


def test_flows_check_reports_a_flow_name_defined_twice(tmp_path: Path) -> None:
    flows_dir = tmp_path / "flows"
    flows_dir.mkdir()
    shutil.copy(FLOWS / "trial.py", flows_dir / "trial.py")
    shutil.copy(FLOWS / "trial.py", flows_dir / "trial_copy.py")

    result = tertulia(tmp_path, "flows", "check", FLOWS_DIR=str(flows_dir))

    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert str(flows_dir / "trial_copy.py") in line and str(flows_dir / "trial.py") in line
    # ... which is what `chat` and `serve` refuse to start with.
    assert assert_one_line_error(
        tertulia(tmp_path, "chat", stdin="hola\n", FLOWS_DIR=str(flows_dir))
    ).endswith("Fix: give each flow its own name")


def _edges(diagram: str) -> dict[tuple[str, str], set[str]]:
    """(source, dest) -> the triggers on that arrow of a Mermaid stateDiagram."""
    edges: dict[tuple[str, str], set[str]] = {}
    for line in diagram.splitlines():
        match = re.fullmatch(r"\s*(\S+) --> (\S+?)(?:: (.*))?", line)
        if match:
            labels = match.group(3)
            edges[(match.group(1), match.group(2))] = (
                {t.strip() for t in labels.split("|")} if labels else set())
    return edges


def test_flows_draw_prints_a_mermaid_state_diagram(tmp_path: Path) -> None:
    result = tertulia(tmp_path, "flows", "draw", "trial")

    assert result.returncode == 0, result.stderr
    diagram = result.stdout
    assert "stateDiagram-v2" in diagram
    assert "greeting --> trial_request: accept" in diagram
    assert "timeout --> [*]" in diagram
    edges = _edges(diagram)
    assert "deliver" in edges[("credentials", "closed")]
    assert edges[("greeting", "trial_request")] == {"accept"}
    assert {"decline", "refuse", "goodbye"} <= edges[("greeting", "closed")]
    for state in ("greeting", "trial_request", "credentials"):
        assert "expire" in edges[(state, "timeout")]
        assert "cancel" in edges[(state, "cancelled")]
    assert ("[*]", "greeting") in edges
    for final in ("closed", "timeout", "cancelled"):
        assert (final, "[*]") in edges


def test_flows_draw_of_an_unknown_flow_fails_on_one_line(tmp_path: Path) -> None:
    result = tertulia(tmp_path, "flows", "draw", "nope")

    line = assert_one_line_error(result)
    assert "'nope'" in line and "trial" in line
    assert result.stdout == ""


# -- the console script --------------------------------------------------------------------


def _console_script() -> str:
    beside = Path(sys.executable).parent / "tertulia"
    found = str(beside) if beside.exists() else shutil.which("tertulia")
    if found is None:
        pytest.fail("the tertulia console script is not installed next to this Python")
    return found


def test_tertulia_console_script_shows_help(tmp_path: Path) -> None:
    result = tertulia(tmp_path, "--help", command=[_console_script()])

    assert result.returncode == 0, result.stderr
    assert "Usage: tertulia" in result.stdout
    for command in ("chat", "flows", "db"):
        assert re.search(rf"^\s+{command}\b", result.stdout, re.MULTILINE)


def test_tertulia_console_script_runs_the_same_chat(tmp_path: Path) -> None:
    result = tertulia(tmp_path, "chat", stdin="hola\n", command=[_console_script()])

    assert result.returncode == 0, result.stderr
    assert "🤖 ¡Hola! 👋" in result.stdout
    assert db_rows(tmp_path, "SELECT channel, state FROM sessions") == [
        {"channel": "console", "state": "greeting"}]


# -- choices, chat --flow and flows test ---------------------------------------------------


def test_chat_with_flow_shows_choices_numbered_and_takes_their_number(tmp_path: Path) -> None:
    result = tertulia(tmp_path, "chat", "--flow", "booking", stdin="hola\n2\n1\n1\n")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"tertulia chat · flujo booking · {DEFAULT_PHONE}\n")
    assert "¿Qué servicio querés?\n\n1. Corte\n2. Barba\n3. Color\n" in out
    assert "🤖 Buenísimo: Barba. ¿Qué día te queda bien?\n\n1. Lunes 10:00\n" in out
    assert "🤖 ¿Confirmamos Barba el Lunes 10:00?\n\n1. Sí, confirmar\n2. No, cambiar\n" in out
    assert "[confirm → closed (booked)]" in out
    [session] = db_rows(tmp_path, "SELECT flow, state, close_reason FROM sessions")
    assert session == {"flow": "booking", "state": "closed", "close_reason": "booked"}
    offered = db_rows(tmp_path, "SELECT text_key, choices FROM messages WHERE direction = 'out' "
                                "ORDER BY id")
    assert offered[0]["text_key"] == "greeting"
    assert '{"id": "barba", "title": "Barba"}' in offered[0]["choices"]
    assert offered[-1] == {"text_key": "booked", "choices": None}


def test_chat_with_an_unknown_flow_fails_on_one_line(tmp_path: Path) -> None:
    result = tertulia(tmp_path, "chat", "--flow", "nope", stdin="hola\n")

    line = assert_one_line_error(result)
    assert "'nope'" in line and "Known flows: booking" in line


def test_flows_test_runs_the_shipped_conversation_tests(tmp_path: Path) -> None:
    result = tertulia(tmp_path, "flows", "test")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("0 failed (2 file(s))")
    assert int(result.stdout.split()[0]) >= 10


def test_flows_test_fails_showing_the_first_difference(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    shutil.copytree(FLOWS, flows)
    (flows / "booking.tests").write_text(
        "== wrong day\n> hola\n< @greeting\n> corte\n< Buenísimo: Barba. ...\n",
        encoding="utf-8")

    result = tertulia(tmp_path, "flows", "test", str(flows / "booking.tests"),
                      FLOWS_DIR=str(flows))

    assert result.returncode == 1
    assert result.stdout.strip() == "0 passed, 1 failed (1 file(s))"
    assert f"FAIL {flows / 'booking.tests'}:5: case 'wrong day'" in result.stderr
    assert "    > corte\n    < Buenísimo: Corte." in result.stderr
    assert "first difference: expected the bot to say\n      Buenísimo: Barba. ..." \
        in result.stderr
