"""No user loses their credentials, on the real server with the fake Twilio.

- kill -9 while the provider is issuing: after the restart the issue is resumed (the
  provider is keyed by session) and the user gets the login, not the inactivity notice;
- a credentials message Twilio reports `undelivered` is sent again, and once its
  re-sends are used up the user may ask again without the trial cooldown refusing them.
"""
# (Secrets off disk, the other half of this file's subject, is tests/reliability/
# test_secrets_at_rest.py.)

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from engine.core.flow import BASE_TEXTS
from persistence.sealing import new_key
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
            GATE_ENV: str(gate), "PYTHONPATH": str(REPO), "CREDENTIALS_KEY": new_key(),
            **extra}


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


def _credentials_row(server) -> dict[str, object]:
    [row] = server.rows("SELECT id, twilio_sid, status, body FROM messages "
                        "WHERE direction = 'out' AND body LIKE '%Contraseña%'")
    return row


def test_undelivered_credentials_are_sent_again_then_given_up(fake, server_factory):
    server = server_factory()
    for text in ASK:
        assert server.send(PHONE, text).status_code == 200
    fake.wait_for(5)
    wait_until(lambda: outbox_idle(server), what="the replies recorded as sent")
    credentials = fake.delivered_to(whatsapp(PHONE))[3]
    assert "Contraseña: " in credentials

    # Twilio reports the credentials undelivered (63024: invalid recipient), twice: the
    # same message, with the same password, goes out again each time.
    for sent in (6, 7):
        row = _credentials_row(server)
        answer = server.status_callback(str(row["twilio_sid"]), "undelivered", 63024)
        assert answer.status_code == 200, answer.text
        fake.wait_for(sent)
        assert fake.delivered_to(whatsapp(PHONE))[-1] == credentials
        wait_until(lambda: outbox_idle(server), what="the re-send recorded")
    [(reason,)] = [tuple(r.values()) for r in server.rows("SELECT close_reason FROM sessions")]
    assert reason == "credentials_delivered"
    assert len(server.rows("SELECT id FROM trials")) == 1

    # The third failure uses the sends up: the trial is withdrawn, the session no longer
    # counts as delivered, and the user who asks again is not refused by the cooldown.
    row = _credentials_row(server)
    assert server.status_callback(str(row["twilio_sid"]), "failed", 63024).status_code == 200
    assert server.rows("SELECT close_reason FROM sessions") == [
        {"close_reason": "credentials_undelivered"}]
    assert server.rows("SELECT id FROM trials") == []
    assert server.send(PHONE, "hola").status_code == 200
    assert server.send(PHONE, "sí").status_code == 200
    fake.wait_for(9)
    assert fake.delivered_to(whatsapp(PHONE))[-2:] == [text_of("greeting", saludo_nombre=""),
                                                       text_of("ask_name")]
    events = server.rows("SELECT trigger, detail FROM session_events "
                         "WHERE trigger LIKE 'credentials_%' ORDER BY id")
    assert [e["trigger"] for e in events] == ["credentials_resent", "credentials_resent",
                                              "credentials_undelivered"]
    assert "63024" in str(events[-1]["detail"])
    # The sealed copy went with the trial: nothing is left to send.
    assert server.rows("SELECT id FROM messages WHERE body_sealed IS NOT NULL") == []
