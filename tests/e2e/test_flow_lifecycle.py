"""A restaurant booking flow added, changed, renamed and removed while users talk to it,
on the real `tertulia serve`: nobody gets a 500, and no session is left stuck.

Each stage edits FLOWS_DIR and restarts the server, as an operator deploys a flow. What
users receive (the Twilio fake), what ops read (rows, `tertulia sessions close`) and
the server's log (no traceback, the start-up warning) are checked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.core.flow import BASE_TEXTS
from tests.support.booking import BOOKING_V1, BOOKING_V2, flows_folder, write_flow
from tests.support.harness import Server, ServerFactory, wait_until, whatsapp
from tests.support.twilio_fake import FakeTwilio

pytestmark = pytest.mark.e2e

E2E_BACKENDS = ("sqlite", "postgres")

# Short real timeouts: `confirming` reminds after 2 s; in the edited flow a new session
# waiting in `asking_people` times out after 8 s (long enough to outlive a restart).
V1 = (BOOKING_V1.replace("timedelta(minutes=2)", "timedelta(seconds=2)")
      .replace("timedelta(minutes=1)", "timedelta(minutes=10)"))
V2 = (BOOKING_V2
      .replace("from engine import Decision, Flow, Turn, step",
               "from datetime import timedelta\n\nfrom engine import Decision, Flow, Timeout, "
               "Turn, step")
      .replace("    reprompts = {",
               '    timeouts = {"asking_people": Timeout(timedelta(seconds=8))}\n'
               "    reprompts = {"))

ANA, BETO, CATA, DANI = (f"+54911555000{n}" for n in range(1, 5))
CHANGED = BASE_TEXTS["flow_changed"]
TRIAL_HELLO = "Soy el asistente de Tertulia"
ASK_PEOPLE = "¿Para cuántas personas reservamos?"


class Users:
    """Phones writing webhooks to the current server; every answer must be a 200."""

    def __init__(self, server: Server, fake: FakeTwilio) -> None:
        self.server = server
        self.fake = fake

    def say(self, phone: str, text: str, expect: int) -> list[str]:
        """Send `text`; wait for `expect` new messages to `phone`, and return them."""
        before = len(self.fake.delivered_to(whatsapp(phone)))
        response = self.server.send(phone, text)
        assert response.status_code == 200, response.text
        return self.received(phone, before, expect)

    def received(self, phone: str, before: int, expect: int) -> list[str]:
        got = wait_until(lambda: (lambda d: d if len(d) >= before + expect else None)(
            self.fake.delivered_to(whatsapp(phone))), 20, f"{expect} message(s) to {phone}")
        return got[before:]

    def sessions(self, phone: str) -> list[dict[str, Any]]:
        return self.server.rows("SELECT * FROM sessions WHERE phone = ? ORDER BY id", (phone,))

    def deploy(self, folder: Path, source: str | None, default: str) -> None:
        """Put the booking flow's file in place (or remove it) and restart."""
        self.server.stop()
        if source is None:
            (folder / "booking.py").unlink()
        else:
            write_flow(folder, source)
        self.server.env["DEFAULT_FLOW"] = default
        self.server.start()


def test_a_booking_flow_added_changed_renamed_and_removed_under_live_users(
    fake: FakeTwilio, server_factory: ServerFactory, tmp_path: Path,
) -> None:
    folder = flows_folder(tmp_path, booking=None)
    server = server_factory(env={"FLOWS_DIR": str(folder), "DEFAULT_FLOW": "trial",
                                 "SESSION_TIMEOUT_MINUTES": "10"})
    users = Users(server, fake)
    assert TRIAL_HELLO in users.say(ANA, "hola", 1)[0]

    # -- added: new sessions start in it; Ana's open trial session carries on ----------------
    users.deploy(folder, V1, default="booking")
    assert "¿Querés la prueba gratis?" in users.say(ANA, "mmm", 1)[0]
    assert users.say(BETO, "hola", 1) == [ASK_PEOPLE]
    users.say(BETO, "4", 1)
    assert users.say(BETO, "21:00", 1) == ["Mesa para 4 a las 21:00. ¿Confirmo? (sí/no)"]
    # `confirming` has its own timeout: a reminder, and Beto waits on in `held`.
    assert users.received(BETO, 3, 1) == [
        "¿Seguís ahí? Te guardo la mesa de las 21:00 un minuto más."]
    assert users.sessions(BETO)[-1]["state"] == "held"
    users.say(CATA, "hola", 1)
    users.say(CATA, "2", 1)  # Cata waits in asking_hour, which the edit renames
    users.say(DANI, "hola", 1)  # Dani waits in asking_people, which the edit keeps

    # -- changed: a state renamed (mapped), one removed, a text reworded ----------------------
    users.deploy(folder, V2, default="booking")
    assert users.say(CATA, "20:30", 1) == [
        "¿Te reservo la mesa para 2 a las 20:30? (sí/no)"]
    assert users.say(DANI, "3", 1) == ["Perfecto, 3 personas. ¿A qué hora?"]
    # Beto's `held` is gone: closed politely, and he starts again in the new version.
    assert users.say(BETO, "sí", 2) == [CHANGED, ASK_PEOPLE]
    closed, fresh = users.sessions(BETO)
    assert (closed["close_reason"], fresh["state"]) == ("flow_changed", "asking_people")

    # -- removed: the default is trial again; booking's open sessions close, none stuck -----
    users.deploy(folder, None, default="trial")
    assert ("3 open sessions use flow 'booking', which no file defines; they close on "
            "their next message or timeout") in server.log_text()
    # Beto's new session times out with its flow gone: the sweep closes it, politely.
    assert users.received(BETO, 6, 1) == [CHANGED]
    assert users.sessions(BETO)[-1]["close_reason"] == "flow_removed"
    # Cata writes: her booking closes and the trial flow greets her.
    replies = users.say(CATA, "sí", 2)
    assert replies[0] == CHANGED and TRIAL_HELLO in replies[1]
    # Ops close Dani's.
    dani = users.sessions(DANI)[-1]["id"]
    result = subprocess.run([sys.executable, "-m", "engine", "sessions", "close", str(dani)],
                            cwd=tmp_path, env=server.env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert users.received(DANI, 2, 1) == [BASE_TEXTS["admin_closed"]]

    reasons = [(s["flow"], s["close_reason"]) for p in (BETO, CATA, DANI)
               for s in users.sessions(p)]
    assert reasons == [("booking", "flow_changed"), ("booking", "flow_removed"),
                       ("booking", "flow_removed"), ("trial", None), ("booking", "admin")]
    open_booking = server.rows("SELECT count(*) AS n FROM sessions WHERE flow = 'booking' "
                               "AND closed_at IS NULL")
    assert open_booking == [{"n": 0}]
