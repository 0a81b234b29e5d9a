"""The ops CLI against a database filled by a real conversation through a real server.

The conversations go through `tertulia serve` (signed webhooks, the loopback Twilio
fake); then `tertulia sessions ...` and `tertulia stats` run as subprocesses with the
same DATABASE_URL and FLOWS_DIR, while the server keeps running, as ops would use them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from engine.flowfiles import load_flows
from tests.support.harness import (
    AUTH_TOKEN,
    FLOWS,
    Server,
    ServerFactory,
    wait_until,
    whatsapp,
)
from tests.support.recipients import RecipientFakeTwilio

pytestmark = pytest.mark.e2e


GREETING = "¡Hola"
ADMIN_NOTICE = "Cerramos esta conversación. Escribinos cuando quieras para empezar de nuevo."
STATS_HEADER = "📊 === ESTADÍSTICAS DEL SISTEMA ==="
MASKED = "+5491123..."
TRIAL, ASKED, GREETED = "+5491123470001", "+5491123470002", "+5491123470003"
# Long enough that nothing times out while the read-only tests look at the sessions.
FILLED_TIMEOUT_MINUTES = 10
LEFT_MAX = FILLED_TIMEOUT_MINUTES * 60


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """`tertulia ARGS` as a subprocess on the server's database and flows."""
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=server.workdir,
        env={**server.env, "PYTHONIOENCODING": "utf-8"}, capture_output=True, text=True,
        encoding="utf-8", timeout=60,
    )


def ok(server: Server, *args: str) -> str:
    result = cli(server, *args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def received(fake: RecipientFakeTwilio, phone: str) -> list[str]:
    return fake.delivered_to(whatsapp(phone))


def talk(server: Server, fake: RecipientFakeTwilio, phone: str, *texts: str,
         replies: int, **kw: Any) -> list[str]:
    for text in texts:
        response = server.send(phone, text, **kw)
        assert response.status_code == 200, response.text
    return wait_until(lambda: (got := received(fake, phone)) and len(got) >= replies and got,
                      10, f"{replies} replies to {phone}")


def session_id(server: Server, phone: str) -> int:
    return int(server.rows("SELECT id FROM sessions WHERE phone = ? ORDER BY id DESC LIMIT 1",
                           (phone,))[0]["id"])


def assert_no_full_phone(text: str, *phones: str) -> None:
    leaked = [p for raw in phones for p in (raw, raw.lstrip("+")) if p in text]
    assert not leaked, f"full numbers in the output: {leaked}\n{text}"


def assert_clean_log(server: Server) -> None:
    log = server.log_text()
    assert "Traceback" not in log, log[-6000:]
    assert AUTH_TOKEN not in log, "the log shows TWILIO_AUTH_TOKEN"


@dataclass
class Filled:
    """A running server whose database holds three conversations."""

    server: Server
    fake: RecipientFakeTwilio
    ids: dict[str, int]
    password: str


def fill(server: Server, fake: RecipientFakeTwilio) -> Filled:
    # A whole trial, to the credentials (closed, reason credentials_delivered)...
    got = talk(server, fake, TRIAL, "hola", "sí", "Ana Pérez", "ana@example.com",
               replies=5, profile_name="Ana")
    match = re.search(r"🔑 Contraseña: (\S+)", "\n".join(got))
    assert match, got
    # ...one asked for its name (trial_request)...
    talk(server, fake, ASKED, "hola", "dale", replies=2)
    # ...and one just greeted (greeting).
    talk(server, fake, GREETED, "hola", replies=1)
    ids = {p: session_id(server, p) for p in (TRIAL, ASKED, GREETED)}
    return Filled(server, fake, ids, match.group(1))


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    """One filled database for the read-only commands (starting servers is slow)."""
    fake = RecipientFakeTwilio(auth_token=AUTH_TOKEN).start()
    server = Server(tmp_path_factory.mktemp("ops"), twilio_api=fake.base_url,
                    env={"SESSION_TIMEOUT_MINUTES": str(FILLED_TIMEOUT_MINUTES)})
    try:
        server.start()
        yield fill(server, fake)
    finally:
        try:
            server.close()
        finally:
            fake.stop()
    assert_clean_log(server)


# -- listing --------------------------------------------------------------------------


def test_sessions_lists_open_sessions_with_masked_phone_flow_state_age_and_time_left(
    filled: Filled,
) -> None:
    server, ids = filled.server, filled.ids
    out = ok(server, "sessions")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "CHANNEL", "PHONE", "FLOW", "STATE", "AGE", "LEFT",
                                "REASON"]
    rows = {int(line.split()[0]): line.split() for line in lines[1:]}
    assert set(rows) == {ids[ASKED], ids[GREETED]}, out  # open ones only
    for sid, state in ((ids[ASKED], "trial_request"), (ids[GREETED], "greeting")):
        _id, channel, masked, flow, got_state, age, left = rows[sid]
        assert (channel, masked, flow, got_state) == ("whatsapp", MASKED, "trial", state)
        assert re.fullmatch(r"\d+m\d\ds", age), age
        assert re.fullmatch(r"\d+s", left) and 0 < int(left[:-1]) <= LEFT_MAX, left
    assert_no_full_phone(out, TRIAL, ASKED, GREETED)

    everything = ok(server, "sessions", "--all")
    rows = {int(line.split()[0]): line.split() for line in everything.splitlines()[1:]}
    assert set(rows) == set(ids.values())
    closed = rows[ids[TRIAL]]
    assert closed[4] == "closed" and closed[6] == "-" and closed[7] == "credentials_delivered"
    assert_no_full_phone(everything, TRIAL, ASKED, GREETED)

    one = ok(server, "sessions", "--phone", ASKED)
    assert [int(line.split()[0]) for line in one.splitlines()[1:]] == [ids[ASKED]]
    nobody = ok(server, "sessions", "--phone", "+5491100000000")
    assert nobody.splitlines()[1:] == ["(no open sessions)"]
    assert_clean_log(server)


def test_sessions_json_gives_one_object_a_line_with_the_phone_masked(filled: Filled) -> None:
    server, ids = filled.server, filled.ids
    out = ok(server, "sessions", "--all", "--json")
    records = [json.loads(line) for line in out.splitlines()]
    by_id = {r["id"]: r for r in records}
    assert set(by_id) == set(ids.values())
    for r in records:
        assert r["phone"] == MASKED and r["flow"] == "trial" and r["channel"] == "whatsapp"
        assert isinstance(r["age_seconds"], int) and r["age_seconds"] >= 0
    assert by_id[ids[TRIAL]]["seconds_left"] is None
    assert by_id[ids[TRIAL]]["close_reason"] == "credentials_delivered"
    assert by_id[ids[ASKED]]["state"] == "trial_request"
    assert 0 < by_id[ids[GREETED]]["seconds_left"] <= LEFT_MAX
    assert by_id[ids[GREETED]]["close_reason"] is None

    open_only = [json.loads(line) for line in ok(server, "sessions", "--json").splitlines()]
    assert {r["id"] for r in open_only} == {ids[ASKED], ids[GREETED]}
    by_phone = [json.loads(line) for line in
                ok(server, "sessions", "--json", "--phone", GREETED).splitlines()]
    assert [r["id"] for r in by_phone] == [ids[GREETED]]
    assert_no_full_phone(out, TRIAL, ASKED, GREETED)


# -- one session ----------------------------------------------------------------------


def test_sessions_show_prints_transcript_and_events_and_never_the_password(
    filled: Filled,
) -> None:
    server, ids, password = filled.server, filled.ids, filled.password
    assert password in "\n".join(received(filled.fake, TRIAL)), "the user did get it"
    out = ok(server, "sessions", "show", str(ids[TRIAL]))

    assert password not in out
    header = out.splitlines()[0]
    assert header == (f"session {ids[TRIAL]} · whatsapp {MASKED} · flow trial · state closed"
                      " · closed: credentials_delivered")
    users = [line for line in out.splitlines() if "→ user" in line]
    bots = [line for line in out.splitlines() if "← bot" in line]
    assert [line.split("] ", 1)[1] for line in users] == [
        "hola", "sí", "Ana Pérez", "ana@example.com"]
    assert any(GREETING in line and "Ana" in line for line in bots)
    assert any("¿cómo te llamás?" in line for line in bots)
    # The credentials body spans lines; its password line shows the redaction.
    creds = [line for line in out.splitlines() if "Contraseña:" in line]
    assert creds == ["🔑 Contraseña: ••••••••"], out
    assert any("Cerramos esta conversación" in line or "Que la disfrutes" in line
               for line in bots)
    events = out[out.index("\nevents:"):]
    for step in ("· → greeting [start]", "greeting → trial_request [accept]",
                 "trial_request → trial_request [take_name]",
                 "trial_request → credentials [take_email]", "credentials → closed [deliver]"):
        assert step in events, events
    assert_no_full_phone(out, TRIAL)

    # Nor does the password stay anywhere ops can read: the log and the table.
    assert password not in server.log_text()
    stored = server.rows("SELECT body FROM messages")
    assert not [r for r in stored if password in r["body"]]
    assert_clean_log(server)


# -- the stats block and the view -----------------------------------------------------


def test_stats_prints_the_block_once(filled: Filled) -> None:
    out = ok(filled.server, "stats")
    lines = out.splitlines()
    assert out.count(STATS_HEADER) == 1 and lines[0] == STATS_HEADER
    assert lines[1] == f"👥 Sesiones activas: 2 (timeout: {FILLED_TIMEOUT_MINUTES} min)"
    assert lines[2] == "👥 Sesiones activas:"
    for line in lines[3:5]:
        assert re.fullmatch(r"   - \+5491123\.\.\.: activa por \d+min, timeout en \d+min", line)
    # Then the closes by reason: the engine's and every loaded flow's own (whatever
    # else flows/ holds), zeros included.
    reasons = load_flows(FLOWS, "trial").close_reasons()
    assert {"admin", "cancelled", "error", "goodbye", "keyword", "timeout", "flow_changed",
            "flow_removed", "credentials_delivered", "credentials_undelivered",
            "trial_refused"} <= set(reasons)
    assert lines[5:] == ["🔚 Sesiones cerradas por motivo:"] + [
        f"   - {reason}: {1 if reason == 'credentials_delivered' else 0}"
        for reason in reasons]
    assert_no_full_phone(out, TRIAL, ASKED, GREETED)


def test_active_sessions_view_shows_seconds_left_for_open_sessions_only(
    filled: Filled,
) -> None:
    server, ids = filled.server, filled.ids
    view = server.rows("SELECT id, state, seconds_left FROM active_sessions ORDER BY id")
    assert [r["id"] for r in view] == sorted([ids[ASKED], ids[GREETED]])
    open_ids = {r["id"] for r in server.rows("SELECT id FROM sessions WHERE closed_at IS NULL")}
    assert {r["id"] for r in view} == open_ids
    for r in view:
        assert isinstance(r["seconds_left"], int) and 0 < r["seconds_left"] <= LEFT_MAX, r
    # It agrees with the row ops would compute by hand.
    by_hand = server.rows("SELECT id, CAST(ROUND((julianday(expires_at) - julianday('now')) "
                          "* 86400) AS INTEGER) AS s FROM sessions WHERE closed_at IS NULL "
                          "ORDER BY id")
    assert all(abs(a["seconds_left"] - b["s"]) <= 1 for a, b in zip(view, by_hand,
                                                                    strict=True))


# -- closing --------------------------------------------------------------------------


def test_sessions_close_by_id_by_phone_and_quietly_and_refuses_unknown_targets(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"SESSION_TIMEOUT_MINUTES": "1"})
    by_id, by_phone, quiet = "+5491123480001", "+5491123480002", "+5491123480003"
    for phone in (by_id, by_phone, quiet):
        talk(server, fake, phone, "hola", replies=1)
    ids = {p: session_id(server, p) for p in (by_id, by_phone, quiet)}

    out = ok(server, "sessions", "close", str(ids[by_id]))
    assert out.strip() == f"closed 1 session(s) {ids[by_id]} (admin, closing notice queued)"
    # The CLI only writes rows; the running server sends the notice.
    got = wait_until(lambda: ADMIN_NOTICE in (r := received(fake, by_id)) and r, 10,
                     "the closing notice")
    assert got.count(ADMIN_NOTICE) == 1
    row = server.rows("SELECT * FROM sessions WHERE id = ?", (ids[by_id],))[0]
    assert (row["state"], row["close_reason"]) == ("closed", "admin")
    assert row["closed_at"] is not None
    event = server.rows("SELECT from_state, to_state, trigger, detail FROM session_events "
                        "WHERE session_id = ? ORDER BY id DESC LIMIT 1", (ids[by_id],))[0]
    assert event == {"from_state": "greeting", "to_state": "closed", "trigger": "admin_close",
                     "detail": "by ops"}

    before = len(server.rows("SELECT id FROM messages WHERE session_id = ?", (ids[quiet],)))
    out = ok(server, "sessions", "close", str(ids[quiet]), "--quiet")
    assert out.strip() == f"closed 1 session(s) {ids[quiet]} (admin, no notice)"
    assert server.rows("SELECT close_reason FROM sessions WHERE id = ?",
                       (ids[quiet],))[0]["close_reason"] == "admin"
    after = server.rows("SELECT id FROM messages WHERE session_id = ?", (ids[quiet],))
    assert len(after) == before, "--quiet queues nothing"

    out = ok(server, "sessions", "close", by_phone)
    assert out.strip() == f"closed 1 session(s) {ids[by_phone]} (admin, closing notice queued)"
    wait_until(lambda: ADMIN_NOTICE in received(fake, by_phone), 10, "the notice by phone")
    assert server.rows("SELECT close_reason FROM sessions WHERE id = ?",
                       (ids[by_phone],))[0]["close_reason"] == "admin"
    # The quiet one's user got nothing after the greeting, though a later notice came.
    assert len(received(fake, quiet)) == 1
    assert_no_full_phone(out, by_phone)

    for target, expected in (("99999", "no open session with id 99999."),
                             ("+5491123489999", "no session with phone '+5491123...'.")):
        result = cli(server, "sessions", "close", target)
        assert result.returncode != 0, result
        assert result.stdout == ""
        assert result.stderr.strip().splitlines() == [f"Error: {expected}"], result.stderr
    assert_no_full_phone(result.stderr, "+5491123489999")

    # A message after an admin close starts a new conversation.
    talk(server, fake, by_id, "hola", replies=3)
    assert received(fake, by_id)[-1].startswith(GREETING)
    assert len(server.rows("SELECT id FROM sessions WHERE phone = ?", (by_id,))) == 2
    assert_clean_log(server)
