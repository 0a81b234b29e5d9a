"""The core knows no particular flow: a flow brings its own close reasons, and builds
what its credential provider receives.

Each test writes its flow into a FLOWS_DIR of its own, loads it by path as `serve`
does, and checks what users receive and what ops read (rows, `tertulia stats`,
/metrics).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from engine.core.clock import FakeClock
from engine.core.errors import FlowDefinitionError
from engine.core.flow import BASE_TEXTS
from engine.core.ports import CredentialRequest, Credentials, Inbound
from engine.flowfiles import check_files, load_flows
from engine.server.worker import Worker
from engine.wiring import Wiring
from tests.support.wiring import make_settings, rows

PHONE = "+5491123450001"

# A flow with a reason of its own ("booked"), and one it declares but never reaches yet.
BOOKING = '''
from engine import Decision, Flow, Turn, step


class Booking(Flow):
    name = "booking"

    states = ["asking", "closed", "timeout", "cancelled"]
    initial = "asking"
    final = ["closed", "timeout", "cancelled"]
    close_reasons = {"booked": "closed", "rescheduled": "closed"}

    texts = {"greeting": "¿Reservamos una mesa? (sí/no)", "booked": "¡Reservado!"}
    transitions = [
        {"trigger": "book", "source": "asking", "dest": "closed", "say": "booked",
         "reason": "booked"},
    ]

    @step("asking")
    def ask(self, turn: Turn) -> Decision:
        """A yes books the table."""
        if turn.intent == "afirmacion":
            return turn.move("book")
        return turn.not_understood()
'''


def write_flow(folder: Path, source: str, name: str = "booking.py") -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "flows"
    write_flow(folder, BOOKING)
    return folder


@pytest.fixture
def worker(tmp_path: Path, flows_dir: Path, clock: FakeClock) -> Iterator[Worker]:
    """The process object `serve` runs, with its metrics, on the booking flow."""
    settings = make_settings(tmp_path, FLOWS_DIR=str(flows_dir), DEFAULT_FLOW="booking")
    service = Worker(settings, clock=clock)
    service.timeouts.start(run_jobs=False)
    try:
        yield service
    finally:
        service.stop()


def say(wiring: Wiring, text: str, n: int, phone: str = PHONE) -> list[str]:
    inbound = Inbound(channel="whatsapp", phone=phone, text=text, message_id=f"SM{phone}{n}")
    return [o.body for o in wiring.conversations.handle(inbound)]


def session_row(wiring: Wiring, phone: str = PHONE) -> dict[str, Any]:
    return rows(wiring, "SELECT * FROM sessions WHERE phone = :p ORDER BY id DESC LIMIT 1",
                p=phone)[0]


# -- close reasons -------------------------------------------------------------------------


def test_a_flow_closes_with_a_reason_it_declares(worker: Worker) -> None:
    wiring = worker.wiring
    assert say(wiring, "hola", 1) == ["¿Reservamos una mesa? (sí/no)"]
    assert say(wiring, "sí", 2) == ["¡Reservado!"]

    session = session_row(wiring)
    assert (session["state"], session["close_reason"]) == ("closed", "booked")
    assert session["closed_at"] is not None
    events = rows(wiring, "SELECT from_state, to_state, trigger FROM session_events "
                  "ORDER BY id")
    assert [(e["from_state"], e["to_state"], e["trigger"]) for e in events] == [
        (None, "asking", "start"), ("asking", "closed", "book"),
    ]


def test_metrics_count_a_declared_reason_and_show_the_known_ones_at_zero(
    worker: Worker,
) -> None:
    say(worker.wiring, "hola", 1)
    say(worker.wiring, "sí", 2)

    scraped = generate_latest(worker.metrics.registry).decode()

    assert 'tertulia_session_closes_total{reason="booked"} 1.0' in scraped
    for reason in ("rescheduled", "goodbye", "cancelled", "timeout", "error", "admin",
                   "keyword", "flow_changed", "flow_removed"):
        assert f'tertulia_session_closes_total{{reason="{reason}"}} 0.0' in scraped
    # Nothing of another flow leaks in: the trial flow is not loaded here.
    assert "credentials_delivered" not in scraped


def test_tertulia_stats_counts_the_reasons_in_the_rows_and_the_declared_ones(
    worker: Worker, tmp_path: Path, flows_dir: Path,
) -> None:
    say(worker.wiring, "hola", 1)
    say(worker.wiring, "sí", 2)
    say(worker.wiring, "hola", 1, phone="+5491123450002")
    say(worker.wiring, "chau", 2, phone="+5491123450002")

    env = {k: v for k, v in os.environ.items() if k not in ("DEFAULT_FLOW", "FLOWS_DIR")}
    env.update(DATABASE_URL=worker.settings.database_url, FLOWS_DIR=str(flows_dir),
               DEFAULT_FLOW="booking", PYTHONIOENCODING="utf-8")
    result = subprocess.run([sys.executable, "-m", "engine", "stats"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, encoding="utf-8", timeout=120,
                            check=False)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    closes = lines[lines.index("🔚 Sesiones cerradas por motivo:") + 1:]
    assert closes == [
        "   - admin: 0", "   - booked: 1", "   - cancelled: 0", "   - error: 0",
        "   - flow_changed: 0", "   - flow_removed: 0",
        "   - goodbye: 1", "   - keyword: 0", "   - rescheduled: 0", "   - timeout: 0",
    ]


UNDECLARED = BOOKING.replace('    close_reasons = {"booked": "closed", "rescheduled": "closed"}\n',
                             "")


def test_a_reason_the_flow_does_not_declare_fails_loading(tmp_path: Path) -> None:
    path = write_flow(tmp_path / "flows", UNDECLARED)

    with pytest.raises(FlowDefinitionError) as raised:
        load_flows(path.parent, "booking")

    message = str(raised.value)
    assert message.startswith(f"{path}: transition 1 (trigger 'book'): ")
    assert "reason 'booked' is neither the engine's nor in close_reasons" in message
    assert "Fix: declare it with close_reasons = {'booked': 'closed'}" in message
    assert "'goodbye'" in message  # the engine's reasons for 'closed' are offered too
    assert "\n" not in message
    assert [str(p) for p in check_files([path])] == [message]
    # The fix the message gives makes it load.
    path.write_text(path.read_text(encoding="utf-8").replace(
        '    final = ["closed", "timeout", "cancelled"]\n',
        '    final = ["closed", "timeout", "cancelled"]\n'
        '    close_reasons = {"booked": "closed"}\n'), encoding="utf-8")
    assert load_flows(path.parent, "booking").default.close_reasons["booked"] == "closed"


@pytest.mark.parametrize(("declared", "expected"), [
    ('{"booked": "asking"}', ("close_reasons['booked']", "'asking', which is not a final",
                              "map it to one of ['cancelled', 'closed', 'timeout']")),
    ('{"booked": "closed", "goodbye": "closed"}',
     ("close_reasons['goodbye']", "one of the engine's own reasons",
      "remove it from close_reasons")),
    ('{"booked": "closed", "no shows": "closed"}',
     ("close_reasons['no shows']", "a reason must be a word", "name it like")),
    ('["booked"]', ("close_reasons", "not a mapping", "(reason -> final state)")),
])
def test_a_bad_close_reasons_declaration_is_named_with_its_fix(
    tmp_path: Path, declared: str, expected: tuple[str, ...],
) -> None:
    source = BOOKING.replace('{"booked": "closed", "rescheduled": "closed"}', declared)
    path = write_flow(tmp_path / "flows", source)

    problems = [str(p) for p in check_files([path])]

    assert problems, "the mistake went unnoticed"
    first = problems[0]
    assert first.startswith(f"{path}: ") and "Fix: " in first and "\n" not in first
    for fragment in expected:
        assert fragment in first, first


# -- what the credential provider receives -------------------------------------------------

# A flow that issues an account for a plan it asked about, and builds the provider's
# request from its own context keys.
RENTAL = '''
from typing import Any

from engine import Decision, Flow, Turn, step


class Rental(Flow):
    name = "rental"

    states = ["plan", "issuing", "closed", "timeout", "cancelled"]
    initial = "plan"
    final = ["closed", "timeout", "cancelled"]
    close_reasons = {"account_ready": "closed"}
    credentials_state = "issuing"

    texts = {"greeting": "¿Qué plan querés? (chico o grande)", "wait": "Un momento…",
             "ready": "Tu usuario es {username}."}
    transitions = [
        {"trigger": "choose", "source": "plan", "dest": "issuing"},
        {"trigger": "ready", "source": "issuing", "dest": "closed", "say": "ready",
         "reason": "account_ready"},
    ]

    @step("plan")
    def choose(self, turn: Turn) -> Decision:
        """Any word is the plan."""
        turn.context["plan"] = turn.text.strip().lower()
        return turn.move("choose")

    DETAILS

    @step("issuing")
    def issue(self, turn: Turn) -> Decision:
        """Hand over the username."""
        if turn.credentials is None:
            return turn.stay("wait")
        return turn.move("ready", username=turn.credentials.username)
'''
WITH_DETAILS = '''def credential_details(self, context: dict[str, Any]) -> dict[str, str]:
        """The provider sizes the account by plan."""
        return {"plan": context["plan"]}'''


class Recording:
    """A provider that keeps every request it got."""

    def __init__(self) -> None:
        self.requests: list[CredentialRequest] = []

    def issue(self, request: CredentialRequest) -> Credentials:
        self.requests.append(request)
        return Credentials(username=f"user-{len(self.requests)}", password="s3cret-pass",
                           expires_at=request.now + timedelta(hours=1))


@pytest.mark.parametrize(("details", "expected"), [
    (WITH_DETAILS, {"plan": "grande"}),
    ("", {}),  # a flow that does not say gets the default: nothing but the phone
], ids=["flow_builds_details", "default_is_empty"])
def test_the_provider_gets_what_the_flow_builds(
    tmp_path: Path, make_wiring: Callable[..., Wiring], clock: FakeClock,
    details: str, expected: dict[str, str],
) -> None:
    flows = tmp_path / "flows"
    write_flow(flows, RENTAL.replace("DETAILS", details), "rental.py")
    provider = Recording()
    wiring = make_wiring(provider=provider, FLOWS_DIR=str(flows), DEFAULT_FLOW="rental")

    assert say(wiring, "hola", 1) == ["¿Qué plan querés? (chico o grande)"]
    assert say(wiring, "Grande", 2) == ["Tu usuario es user-1."]

    (request,) = provider.requests
    session = session_row(wiring)
    assert request == CredentialRequest(key=str(session["id"]), phone=PHONE, now=clock.now(),
                                        details=expected)
    assert (session["state"], session["close_reason"]) == ("closed", "account_ready")
    assert rows(wiring, "SELECT username FROM trials") == [{"username": "user-1"}]


def test_a_failing_credential_details_apologises_and_closes_with_error(
    tmp_path: Path, make_wiring: Callable[..., Wiring],
) -> None:
    flows = tmp_path / "flows"
    write_flow(flows, RENTAL.replace("DETAILS", WITH_DETAILS.replace(
        'context["plan"]', 'context["plann"]')), "rental.py")
    provider = Recording()
    wiring = make_wiring(provider=provider, FLOWS_DIR=str(flows), DEFAULT_FLOW="rental")

    say(wiring, "hola", 1)
    replies = say(wiring, "chico", 2)

    assert replies == [BASE_TEXTS["apology"]]
    assert provider.requests == []
    session = session_row(wiring)
    assert (session["state"], session["close_reason"]) == ("closed", "error")
    event = rows(wiring, "SELECT trigger, detail FROM session_events ORDER BY id DESC")[0]
    assert event["trigger"] == "fail" and "KeyError" in event["detail"]


# -- the engine's bookkeeping stays out of the flow's context ------------------------------

# A flow that keeps keys named like the engine's old bookkeeping in its own context.
TALLY = '''
from engine import Decision, Flow, Turn, step


class Tally(Flow):
    name = "tally"

    states = ["counting", "closed", "timeout", "cancelled"]
    initial = "counting"
    final = ["closed", "timeout", "cancelled"]
    close_reasons = {"counted": "closed"}

    texts = {"greeting": "Mandame números; *listo* para terminar.",
             "noted": "Van {misses} números ({warned}).", "done": "Total: {misses}."}
    transitions = [
        {"trigger": "finish", "source": "counting", "dest": "closed", "say": "done",
         "reason": "counted"},
    ]

    @step("counting")
    def count(self, turn: Turn) -> Decision:
        """A number adds one; *listo* ends."""
        text = turn.text.strip()
        if text.isdigit():
            turn.context["misses"] = turn.context.get("misses", 0) + 1
            turn.context["warned"] = "avisado"
            return turn.stay("noted")
        if text == "listo":
            return turn.move("finish")
        return turn.not_understood()
'''


def test_a_flow_may_keep_misses_and_warned_in_its_context(
    tmp_path: Path, make_wiring: Callable[..., Wiring], clock: FakeClock,
) -> None:
    flows = tmp_path / "flows"
    write_flow(flows, TALLY, "tally.py")
    wiring = make_wiring(FLOWS_DIR=str(flows), DEFAULT_FLOW="tally",
                         SESSION_WARNING_SECONDS="30")

    say(wiring, "hola", 1)
    assert say(wiring, "7", 2) == ["Van 1 números (avisado)."]
    # Three messages it cannot place: two re-prompts, then the options (the engine's count).
    assert say(wiring, "eh", 3) == [BASE_TEXTS["not_understood"]]
    assert say(wiring, "qué", 4) == [BASE_TEXTS["not_understood"]]
    session = session_row(wiring)
    assert (session["misses"], session["context"]) == (2, '{"misses":1,"warned":"avisado"}')
    assert say(wiring, "mmm", 5) == [BASE_TEXTS["options"]]
    assert say(wiring, "8", 6) == ["Van 2 números (avisado)."]

    # The warning is the engine's too: it goes out once, and the flow's key stays.
    clock.advance(timedelta(minutes=3) - timedelta(seconds=20))
    assert wiring.conversations.warn(session["id"])
    assert not wiring.conversations.warn(session["id"])
    session = session_row(wiring)
    assert (session["misses"], session["warned"]) == (0, 1)
    assert session["context"] == '{"misses":2,"warned":"avisado"}'

    assert say(wiring, "listo", 7) == ["Total: 2."]
    session = session_row(wiring)
    assert (session["state"], session["close_reason"]) == ("closed", "counted")
    assert (session["misses"], session["warned"]) == (0, 0)
    assert session["context"] == '{"misses":2,"warned":"avisado"}'
    bodies = [r["body"] for r in rows(wiring, "SELECT body FROM messages "
                                      "WHERE direction = 'out' ORDER BY id")]
    assert bodies.count(BASE_TEXTS["warning"]) == 1
