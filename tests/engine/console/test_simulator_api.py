"""The simulator's calls and the ops API, in-process against the real engine and store.

The event stream itself is tested against the real server (test_stream.py) and in a
browser (test_browser.py); here: what a message, a reset and a close write, and what
the ops listings read back.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from engine.console.views import error_text
from tests.engine.console.conftest import TOKEN, ClientFactory, bearer, say
from tests.support.harness import db_rows
from tests.support.paths import FLOWS

PHONE = "+5491133300002"

SURVEY = '''
from engine import Decision, Flow, Turn, step


class Survey(Flow):
    name = "survey"
    states = ["ask", "closed", "timeout", "cancelled"]
    initial = "ask"
    final = ["closed", "timeout", "cancelled"]
    texts = {"greeting": "¿Nos recomendarías? (sí/no)", "thanks": "¡Gracias!"}
    transitions = [
        {"trigger": "answer", "source": "ask", "dest": "closed", "say": "thanks",
         "reason": "goodbye"},
    ]

    @step("ask")
    def ask(self, turn: Turn) -> Decision:
        """A yes or a no ends the survey."""
        if turn.intent in ("afirmacion", "negacion"):
            return turn.move("answer")
        return turn.not_understood()
'''


@pytest.fixture
def two_flows(tmp_path: Path) -> Path:
    flows = tmp_path / "flows"
    flows.mkdir()
    shutil.copy(FLOWS / "trial.py", flows / "trial.py")
    (flows / "survey.py").write_text(SURVEY, encoding="utf-8")
    return flows


def rows(tmp_path: Path, sql: str) -> list[dict[str, object]]:
    return db_rows(tmp_path / "tertulia.db", sql)


def sessions(client: TestClient, query: str = "") -> list[dict[str, object]]:
    response = client.get(f"/console/api/sessions{query}", headers=bearer())
    assert response.status_code == 200, response.text
    found: list[dict[str, object]] = response.json()["sessions"]
    return found


def test_a_simulated_message_runs_the_real_flow_on_channel_web(
    console_client: ClientFactory, tmp_path: Path,
) -> None:
    client = console_client(ADMIN_TOKEN=TOKEN)
    say(client, PHONE, "hola", name="Ana")
    said = rows(tmp_path, "SELECT channel, direction, body, status FROM messages ORDER BY id")
    assert [(r["channel"], r["direction"]) for r in said] == [("web", "in"), ("web", "out")]
    assert str(said[1]["body"]).startswith("¡Hola, Ana!")
    assert said[1]["status"] == "pending"  # until the phone's stream takes it
    assert sessions(client)[0]["state"] == "greeting"


def test_the_simulator_starts_the_flow_picked_and_keeps_an_open_session_on_its_own(
    console_client: ClientFactory, two_flows: Path,
) -> None:
    client = console_client(ADMIN_TOKEN=TOKEN, FLOWS_DIR=str(two_flows))
    say(client, PHONE, "hola", flow="survey")
    say(client, PHONE, "otra cosa", flow="trial")  # the open survey session goes on
    assert [(s["flow"], s["state"]) for s in sessions(client)] == [("survey", "ask")]
    say(client, PHONE, "sí")
    assert sessions(client) == []
    say(client, "+5491133300003", "hola")  # no flow picked: the default
    assert [s["flow"] for s in sessions(client)] == ["trial"]


@pytest.mark.parametrize(("body", "problem"), [
    ({"phone": "12", "text": "hola"}, "E.164"),
    ({"phone": PHONE, "text": "   "}, "empty"),
    ({"phone": PHONE, "text": "x" * 4097}, "at most 4096"),
    ({"phone": PHONE, "text": "hola", "flow": "nope"}, "flow 'nope' is not loaded"),
    ({"phone": PHONE, "text": "hola", "flow": ["trial"]}, "flow must be a string"),
    ({"phone": PHONE, "text": {"a": 1}}, "text must be a string"),
    ({"phone": PHONE, "text": "hola", "name": 7}, "name must be a string"),
])
def test_bad_simulator_input_gets_a_400_naming_the_problem(
    console_client: ClientFactory, tmp_path: Path, body: dict[str, object], problem: str,
) -> None:
    client = console_client(ADMIN_TOKEN=TOKEN)
    response = client.post("/console/api/sim/messages", headers=bearer(), json=body)
    assert response.status_code == 400
    assert problem in response.json()["error"]
    assert rows(tmp_path, "SELECT id FROM messages") == []


def test_a_body_that_is_not_a_json_object_gets_a_400(console_client: ClientFactory) -> None:
    client = console_client(ADMIN_TOKEN=TOKEN)
    for content in (b"not json", b"[1, 2]"):
        response = client.post("/console/api/sim/messages", headers=bearer(), content=content)
        assert response.status_code == 400
        assert response.json() == {"error": "expected a JSON object"}


def test_reset_closes_the_open_session_without_a_notice(
    console_client: ClientFactory, tmp_path: Path,
) -> None:
    client = console_client(ADMIN_TOKEN=TOKEN)
    say(client, PHONE, "hola")
    response = client.post("/console/api/sim/reset", headers=bearer(), json={"phone": PHONE})
    assert response.status_code == 200
    assert response.json()["session"]["reason"] == "admin"
    assert rows(tmp_path, "SELECT count(*) AS n FROM messages WHERE direction = 'out'") == \
        [{"n": 1}]  # the greeting, and no closing notice
    say(client, PHONE, "hola")
    assert len(rows(tmp_path, "SELECT id FROM sessions")) == 2


def test_ops_filters_by_state_flow_and_close_reason(console_client: ClientFactory) -> None:
    client = console_client(ADMIN_TOKEN=TOKEN)
    say(client, "+5491133300011", "hola")
    say(client, "+5491133300012", "hola", "sí")
    say(client, "+5491133300013", "hola", "chau")
    assert {s["state"] for s in sessions(client)} == {"greeting", "trial_request"}
    assert [s["phone"] for s in sessions(client, "?state=trial_request")] == ["+5491133..."]
    assert sessions(client, "?flow=other") == []
    goodbye = sessions(client, "?reason=goodbye")
    assert [(s["state"], s["close_reason"]) for s in goodbye] == [("closed", "goodbye")]
    assert len(sessions(client, "?closed=1")) == 3


def test_the_api_close_sends_the_notice_unless_asked_not_to(
    console_client: ClientFactory, tmp_path: Path,
) -> None:
    client = console_client(ADMIN_TOKEN=TOKEN)
    say(client, "+5491133300021", "hola")
    say(client, "+5491133300022", "hola")
    loud, quiet = sorted(int(str(s["id"])) for s in sessions(client))
    assert client.post(f"/console/api/sessions/{loud}/close", headers=bearer()).status_code == 200
    assert client.post(f"/console/api/sessions/{quiet}/close", headers=bearer(),
                       json={"notify": False}).status_code == 200
    notices = rows(tmp_path, "SELECT session_id FROM messages WHERE body LIKE 'Cerramos esta%'")
    assert notices == [{"session_id": loud}]
    detail = client.get(f"/console/api/sessions/{loud}", headers=bearer()).json()
    assert detail["session"]["close_reason"] == "admin"
    assert [e["trigger"] for e in detail["events"]] == ["start", "admin_close"]
    missing = client.post("/console/api/sessions/999/close", headers=bearer())
    assert missing.status_code == 404


def test_a_session_page_for_a_missing_or_absurd_id_is_a_404(
    console_client: ClientFactory,
) -> None:
    client = console_client(ADMIN_TOKEN=TOKEN)
    for session_id in ("999", str(2**70)):
        assert client.get(f"/console/api/sessions/{session_id}",
                          headers=bearer()).status_code == 404


def test_the_outbox_api_lists_statuses_and_rejects_an_unknown_filter(
    console_client: ClientFactory,
) -> None:
    client = console_client(ADMIN_TOKEN=TOKEN)
    say(client, PHONE, "hola")
    listed = client.get("/console/api/outbox?status=pending", headers=bearer()).json()
    assert [(m["channel"], m["status"]) for m in listed["messages"]] == [("web", "pending")]
    assert client.get("/console/api/outbox?status=failed", headers=bearer()).json() == \
        {"messages": []}
    bad = client.get("/console/api/outbox?status=lost", headers=bearer())
    assert bad.status_code == 400 and "one of all, pending" in bad.json()["error"]


def test_error_codes_are_explained_in_a_few_words() -> None:
    assert "STOP" in error_text("failed", 21610)
    assert "24-hour window" in error_text("undelivered", 63016)
    assert error_text("failed", 500) == "HTTP 500 from Twilio"
    assert "Twilio's page" in error_text("failed", 12345)
    assert "24 hours" in error_text("skipped_window", None)
    assert error_text("delivered", None) == ""
