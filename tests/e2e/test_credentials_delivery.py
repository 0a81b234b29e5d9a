"""No user loses their credentials, on the real server with the fake Twilio.

- kill -9 while the provider is issuing: after the restart the issue is resumed (the
  provider is keyed by session) and the user gets the login, not the inactivity notice;
- a credentials message Twilio reports `undelivered` is sent again, and once its
  re-sends are used up the user may ask again without the trial cooldown refusing them.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from engine.core.flow import BASE_TEXTS
from tests.support.gated_provider import GATE_ENV, issued
from tests.support.harness import wait_until, whatsapp
from tests.support.paths import REPO
from tests.support.trial import text_of

PHONE = "+5491156200001"
ASK = ("hola", "sí", "Ana Gómez", "ana@mail.com")


def outbox_idle(server) -> bool:
    return not server.rows("SELECT id FROM messages WHERE direction = 'out' "
                           "AND status IN ('pending', 'sending')")


def gated_env(gate: Path, **extra: str) -> dict[str, str]:
    gate.mkdir(exist_ok=True)
    return {"CREDENTIAL_PROVIDER": "tests.support.gated_provider:GatedProvider",
            GATE_ENV: str(gate), "PYTHONPATH": str(REPO), **extra}


def credentials_text(creds: dict[str, str]) -> str:
    expires = datetime.fromisoformat(creds["expires_at"])
    return text_of("credentials", name="Ana Gómez", username=creds["username"],
                   password=creds["password"], expires=f"{expires:%d/%m/%Y %H:%M} UTC",
                   login_url=creds["login_url"])


def test_kill9_mid_issue_resumes_after_restart_and_delivers(fake, server_factory, tmp_path):
    gate = tmp_path / "gate"
    # A short timeout: on a server that does not resume, the notice comes within 3 s.
    server = server_factory(env=gated_env(gate, SESSION_TIMEOUT_MINUTES="0.05"))
    for text in ASK:
        assert server.send(PHONE, text).status_code == 200
    fake.wait_for(3)
    wait_until(lambda: list(gate.glob("asked-*")), what="the provider to be asked")
    wait_until(lambda: outbox_idle(server), what="the replies recorded as sent")
    server.kill()  # mid-issue: the provider has not answered

    (gate / "open").touch()
    server.restart()
    fake.wait_for(5, timeout=15)
    [session] = server.rows("SELECT id, state, close_reason FROM sessions")
    creds = issued(gate, session["id"])
    assert fake.delivered_to(whatsapp(PHONE))[3:] == [credentials_text(creds),
                                                      text_of("closing")]
    assert (session["state"], session["close_reason"]) == ("closed", "credentials_delivered")
    # Asked twice with the same key (the session): the provider makes it idempotent.
    assert sorted(p.name.rsplit("-", 1)[0] for p in gate.glob("asked-*")) == [
        f"asked-{session['id']}"] * 2
    assert server.rows("SELECT username FROM trials") == [{"username": creds["username"]}]
    assert BASE_TEXTS["timeout_notice"] not in fake.delivered_to(whatsapp(PHONE))
