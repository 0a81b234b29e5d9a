"""The Twilio WhatsApp channel end to end: a real `tertulia serve`, real twilio-python,
the loopback fake of Twilio's Messages API, and what users and ops see.

Every test gets its own server, database and log (tests/support/plugin.py); the
fixture's teardown fails the test if the server log holds a "Traceback".

To prove that something did NOT happen (no reply, no retry) without sleeping, a test
either relies on a final row status the dispatcher never picks up again, or sends a
later "barrier" message and waits for its reply: the dispatcher would have tried the
earlier one first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.harness import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FORM,
    TWILIO_FROM,
    Server,
    ServerFactory,
    message_sid,
    wait_until,
    whatsapp,
)
from tests.support.recipients import RecipientFakeTwilio

pytestmark = pytest.mark.e2e

# Argentine mobile numbers, one (or two) per test so nothing can cross over.
ANA = "+5491155501001"
BETO = "+5491155501002"
CARLA = "+5491155501003"
DIEGO = "+5491155501004"

GREETING = "Soy el asistente de Tertulia"
ASK_NAME = "¿cómo te llamás?"
ASK_EMAIL = "Ahora pasame tu email"
CREDENTIALS = "Tu prueba gratis está activa"
CLOSING = "Que la disfrutes"
# Each server test runs on the embedded SQLite and on PostgreSQL.
E2E_BACKENDS = ("sqlite", "postgres")
MEDIA_ONLY = "solo leo mensajes de texto"
OFFER_AGAIN = "¿Querés la prueba gratis?"


# -- helpers -------------------------------------------------------------------------------


def assert_twiml(response: httpx.Response) -> None:
    """A webhook accepted: 200 with empty TwiML as text/xml."""
    assert response.status_code == 200, (response.status_code, response.text)
    assert "<Response/>" in response.text
    assert response.headers["content-type"].startswith("text/xml")


def outbound(server: Server, phone: str) -> list[dict[str, Any]]:
    """The outbox rows of `phone`, oldest first."""
    return server.rows(
        "SELECT m.* FROM messages m JOIN sessions s ON s.id = m.session_id "
        "WHERE m.direction = 'out' AND s.phone = ? ORDER BY m.id", (phone,))


def inbound(server: Server, phone: str | None = None) -> list[dict[str, Any]]:
    if phone is None:
        return server.rows("SELECT * FROM messages WHERE direction = 'in' ORDER BY id")
    return server.rows(
        "SELECT m.* FROM messages m JOIN sessions s ON s.id = m.session_id "
        "WHERE m.direction = 'in' AND s.phone = ? ORDER BY m.id", (phone,))


def settled(server: Server, phone: str, count: int, *, timeout: float = 10.0,
            status: str | None = None) -> list[dict[str, Any]]:
    """Wait until `phone` has `count` outbox rows, none pending or sending (or all in
    `status`), and return them."""
    def done() -> list[dict[str, Any]] | None:
        rows = outbound(server, phone)
        if len(rows) != count:
            return None
        if status is not None:
            return rows if all(r["status"] == status for r in rows) else None
        return rows if all(r["status"] not in ("pending", "sending") for r in rows) else None
    return wait_until(done, timeout, f"{count} settled outbox row(s) for {phone}")


def session_of(server: Server, phone: str) -> dict[str, Any]:
    rows = server.rows("SELECT * FROM sessions WHERE phone = ? ORDER BY id", (phone,))
    assert len(rows) == 1, rows
    return rows[0]


def bodies(fake: RecipientFakeTwilio, phone: str) -> list[str]:
    return fake.delivered_to(whatsapp(phone))


def converse(server: Server, fake: RecipientFakeTwilio, phone: str, text: str,
             expect_total: int, **extra: Any) -> httpx.Response:
    """Send one message and wait until `phone` has received `expect_total` messages."""
    response = server.send(phone, text, **extra)
    assert_twiml(response)
    wait_until(lambda: len(bodies(fake, phone)) >= expect_total, 10.0,
               f"{expect_total} message(s) delivered to {phone}")
    return response


# -- the whole conversation ----------------------------------------------------------------


def test_trial_flow_over_signed_webhooks(fake: RecipientFakeTwilio,
                                         server_factory: ServerFactory) -> None:
    server = server_factory()
    sids = [message_sid() for _ in range(4)]
    responses = [
        converse(server, fake, ANA, "hola", 1, sid=sids[0], profile_name="Ana"),
        converse(server, fake, ANA, "sí", 2, sid=sids[1], profile_name="Ana"),
        converse(server, fake, ANA, "ana lópez", 3, sid=sids[2], profile_name="Ana"),
        converse(server, fake, ANA, "Ana@Example.com", 5, sid=sids[3], profile_name="Ana"),
    ]
    for response in responses:
        assert_twiml(response)

    # What the user received, in order, from our sender, with the status callback.
    received = fake.delivered
    assert len(received) == 5, [(r.to, r.body) for r in received]
    greeting, ask_name, ask_email, credentials, closing = (r.body for r in received)
    assert greeting.startswith("¡Hola, Ana!") and GREETING in greeting
    assert ASK_NAME in ask_name
    assert ASK_EMAIL in ask_email and "Gracias, Ana López." in ask_email
    assert CREDENTIALS in credentials and "¡Listo, Ana López!" in credentials
    username = re.search(r"Usuario: (\S+)", credentials)
    password = re.search(r"Contraseña: (\S+)", credentials)
    assert username and password, credentials
    assert CLOSING in closing
    for record in received:
        assert record.to == whatsapp(ANA)
        assert record.from_ == TWILIO_FROM
        assert record.account_sid == ACCOUNT_SID
        assert record.status_callback == f"{server.url}/twilio/status"

    # What ops read.
    session = session_of(server, ANA)
    assert session["state"] == "closed"
    assert session["close_reason"] == "credentials_delivered"
    assert session["closed_at"] is not None
    assert session["channel"] == "whatsapp"
    rows = settled(server, ANA, 5)
    assert [r["status"] for r in rows] == ["queued"] * 5
    assert [r["attempts"] for r in rows] == [1] * 5
    assert [r["twilio_sid"] for r in rows] == [r.sid for r in received]
    assert all(r["sent_at"] is not None for r in rows)
    ins = inbound(server, ANA)
    assert [r["twilio_sid"] for r in ins] == sids
    assert [r["body"] for r in ins] == ["hola", "sí", "ana lópez", "Ana@Example.com"]

    # The password left with the message and is kept nowhere: not in any row, not in the log.
    secret = password.group(1)
    everywhere = server.rows("SELECT id, body FROM messages")
    assert [r["id"] for r in everywhere if secret in r["body"]] == []
    stored_credentials = rows[3]["body"]
    assert f"Usuario: {username.group(1)}" in stored_credentials
    assert "Contraseña:" in stored_credentials
    assert secret not in server.log_text()
    trials = server.rows("SELECT * FROM trials WHERE phone = ?", (ANA,))
    assert [t["username"] for t in trials] == [username.group(1)]

    events = server.rows("SELECT to_state FROM session_events WHERE session_id = ? "
                         "ORDER BY id", (session["id"],))
    assert [e["to_state"] for e in events][-1] == "closed"
    assert "credentials" in [e["to_state"] for e in events]

    # Twilio retries the last webhook after the close: nothing new happens. The next
    # real message (the barrier) starts a new session, and the old one is kept.
    assert_twiml(server.send(ANA, "Ana@Example.com", sids[3], profile_name="Ana"))
    converse(server, fake, ANA, "hola", 6, profile_name="Ana")
    assert len(bodies(fake, ANA)) == 6 and GREETING in bodies(fake, ANA)[5]
    history = server.rows("SELECT state, close_reason FROM sessions WHERE phone = ? "
                          "ORDER BY id", (ANA,))
    assert history == [{"state": "closed", "close_reason": "credentials_delivered"},
                       {"state": "greeting", "close_reason": None}]


# -- the signature check -------------------------------------------------------------------


def test_unsigned_or_badly_signed_webhooks_are_refused(fake: RecipientFakeTwilio,
                                                        server_factory: ServerFactory) -> None:
    server = server_factory()
    form = server.inbound_form(ANA, "hola", profile_name="Ana")

    unsigned = server.post_webhook(form, sign=False)
    wrong_token = server.post_webhook(form, token="not-the-auth-token")
    garbage = server.post_webhook(form, signature="bm90IGEgc2lnbmF0dXJl")
    other_url = server.post_webhook(
        form, signature=server.signature(form, path="/twilio/elsewhere"))
    tampered = server.post_webhook({**form, "Body": "chau"}, signature=server.signature(form))
    for response in (unsigned, wrong_token, garbage, other_url, tampered):
        assert response.status_code == 403, (response.status_code, response.text)

    # A signed message from someone else goes through and is answered, so the refused
    # ones would have been answered by now if they had been stored.
    # Barrier, with a query string on the URL (part of what Twilio signs).
    barrier = message_sid()
    assert_twiml(server.post_webhook(server.inbound_form(BETO, "hola", barrier),
                                     path="/twilio/whatsapp?source=e2e"))
    wait_until(lambda: bodies(fake, BETO), 10.0, "the greeting to BETO")
    assert {r.to for r in fake.requests} == {whatsapp(BETO)}
    assert server.rows("SELECT * FROM sessions WHERE phone = ?", (ANA,)) == []
    assert [r["twilio_sid"] for r in inbound(server)] == [barrier]

    log = server.log_text()
    assert "X-Twilio-Signature missing" in log
    assert "X-Twilio-Signature does not match" in log
    assert AUTH_TOKEN not in log


# -- dedupe, media, buttons ----------------------------------------------------------------


def test_repeated_message_sid_is_processed_once(fake: RecipientFakeTwilio,
                                                server_factory: ServerFactory) -> None:
    server = server_factory()
    sid = message_sid()
    first = server.send(ANA, "hola", sid=sid, profile_name="Ana")
    again = server.send(ANA, "hola", sid=sid, profile_name="Ana")  # Twilio's retry
    assert_twiml(first)
    assert_twiml(again)

    # Barrier: the next message's reply comes after any second greeting would have.
    converse(server, fake, ANA, "sí", 2)
    got = bodies(fake, ANA)
    assert len(got) == 2, got
    assert GREETING in got[0] and ASK_NAME in got[1]
    assert [r["twilio_sid"] for r in inbound(server, ANA)].count(sid) == 1
    assert len(inbound(server, ANA)) == 2
    assert len(outbound(server, ANA)) == 2
    assert session_of(server, ANA)["state"] == "trial_request"


def test_concurrent_repeats_of_a_first_message_are_processed_once(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory()
    form = server.inbound_form(BETO, "hola")
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: server.post_webhook(form), range(6)))
    for response in responses:
        assert_twiml(response)

    converse(server, fake, BETO, "sí", 2)
    got = bodies(fake, BETO)
    assert len(got) == 2 and GREETING in got[0] and ASK_NAME in got[1], got
    assert len(server.rows("SELECT * FROM sessions WHERE phone = ?", (BETO,))) == 1
    assert len(inbound(server, BETO)) == 2


def test_media_only_message_gets_a_polite_reply_and_keeps_the_state(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory()
    media = {
        "NumMedia": "1", "MessageType": "image", "MediaContentType0": "image/jpeg",
        "MediaUrl0": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/"
                     f"{message_sid('MM')}/Media/{message_sid('ME')}",
    }
    converse(server, fake, ANA, "hola", 1)

    converse(server, fake, ANA, "", 2, **media)
    assert MEDIA_ONLY in bodies(fake, ANA)[1]
    assert session_of(server, ANA)["state"] == "greeting"

    converse(server, fake, ANA, "sí", 3)
    assert ASK_NAME in bodies(fake, ANA)[2]
    converse(server, fake, ANA, "", 4, **media)
    assert MEDIA_ONLY in bodies(fake, ANA)[3]
    session = session_of(server, ANA)
    assert session["state"] == "trial_request"
    assert "name" not in json.loads(session["context"])

    # Still waiting for the name: the next text is taken as one.
    converse(server, fake, ANA, "Ana", 5)
    assert ASK_EMAIL in bodies(fake, ANA)[4]
    assert len(bodies(fake, ANA)) == 5


def test_button_payload_speaks_when_its_label_says_nothing(fake: RecipientFakeTwilio,
                                                          server_factory: ServerFactory) -> None:
    server = server_factory()
    converse(server, fake, ANA, "hola", 1)
    # A quick reply: the label is in Body, what the button means in ButtonPayload. The
    # words are read first (test_choices.py: "No, gracias" with btn_decline declines).
    converse(server, fake, ANA, "Opción 1", 2, ButtonText="Opción 1", ButtonPayload="si")
    assert ASK_NAME in bodies(fake, ANA)[1]
    assert session_of(server, ANA)["state"] == "trial_request"

    # The same label without a payload is not understood.
    converse(server, fake, BETO, "hola", 1)
    converse(server, fake, BETO, "Opción 1", 2)
    assert OFFER_AGAIN in bodies(fake, BETO)[1]
    assert session_of(server, BETO)["state"] == "greeting"


# -- malformed input -----------------------------------------------------------------------


def test_malformed_webhooks_are_refused_and_unknown_fields_accepted(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory()

    no_from = server.send(ANA, "hola", From=None)
    assert no_from.status_code == 400 and "From" in no_from.text

    no_sid = server.send(ANA, "hola", MessageSid=None)
    assert no_sid.status_code == 400 and "MessageSid" in no_sid.text

    not_whatsapp = server.send(ANA, "hola", From="whatsapp:hola")
    assert not_whatsapp.status_code == 400

    form = server.inbound_form(ANA, "hola")
    as_json = server.post_webhook(form, content_type="application/json",
                                  content=json.dumps(form))
    assert as_json.status_code == 400

    not_form = server.post_webhook(form, content=b"\xff\xfe not utf-8 = & =")
    assert not_form.status_code == 400

    huge = server.inbound_form(ANA, "a" * (65 * 1024))
    assert server.post_webhook(huge).status_code == 413

    # The same without Content-Length (chunked): the cap holds while reading.
    chunk = b"Body=" + b"a" * (16 * 1024)

    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield chunk

    chunked = server.client.post("/twilio/whatsapp", content=chunks(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert chunked.status_code == 413

    assert server.get("/twilio/whatsapp").status_code == 405
    assert server.get("/twilio/status").status_code == 405

    # A charset parameter on the form content type is fine.
    with_charset = server.inbound_form(CARLA, "hola")
    assert_twiml(server.post_webhook(with_charset, content_type=f"{FORM}; charset=UTF-8"))

    # Twilio adds fields without notice: never refuse them.
    extra_sid = message_sid()
    extra = server.send(BETO, "hola", extra_sid, ReferralCtwaClid="ARAkL0", SomeFieldFrom2031="x",
                        ChannelMetadata='{"type":"whatsapp"}')
    assert_twiml(extra)
    wait_until(lambda: bodies(fake, BETO) and bodies(fake, CARLA), 10.0,
               "the greetings to BETO and CARLA")

    assert server.rows("SELECT * FROM sessions WHERE phone = ?", (ANA,)) == []
    assert [r["twilio_sid"] for r in inbound(server)] == [with_charset["MessageSid"],
                                                         extra_sid]
    assert sorted({r.to for r in fake.requests}) == [whatsapp(BETO), whatsapp(CARLA)]


# -- status callbacks ----------------------------------------------------------------------


def test_status_callbacks_never_move_a_status_backwards(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory()
    converse(server, fake, ANA, "hola", 1)
    (greeting,) = settled(server, ANA, 1, status="queued")
    sid = greeting["twilio_sid"]
    assert sid == fake.delivered[0].sid

    def status_of(message_id: int) -> tuple[str, int | None]:
        (row,) = server.rows("SELECT status, error_code FROM messages WHERE id = ?",
                             (message_id,))
        return row["status"], row["error_code"]

    # Twilio's own "sending" follows queued (DESIGN.md's order). A row that has a SID is
    # out of the outbox, so a restart never mistakes it for our own in-flight claim.
    assert_twiml(server.status_callback(sid, "sending", to=whatsapp(ANA)))
    assert status_of(greeting["id"]) == ("sending", None)
    for late in ("delivered", "sent", "queued", "sending"):
        assert_twiml(server.status_callback(sid, late, to=whatsapp(ANA)))
    assert status_of(greeting["id"]) == ("delivered", None)
    assert_twiml(server.status_callback(sid, "read", to=whatsapp(ANA)))
    assert status_of(greeting["id"]) == ("read", None)

    converse(server, fake, ANA, "sí", 2)
    ask_name = wait_until(
        lambda: [r for r in outbound(server, ANA)[1:] if r["status"] == "queued"], 10.0,
        "the second reply recorded as queued")[0]
    other = ask_name["twilio_sid"]
    assert_twiml(server.status_callback(other, "sent", to=whatsapp(ANA)))
    assert status_of(ask_name["id"]) == ("sent", None)
    assert_twiml(server.status_callback(other, "failed", 63016, to=whatsapp(ANA)))
    assert status_of(ask_name["id"]) == ("failed", 63016)
    # Final: nothing moves it any more.
    assert_twiml(server.status_callback(other, "delivered", to=whatsapp(ANA)))
    assert status_of(ask_name["id"]) == ("failed", 63016)

    assert_twiml(server.status_callback(message_sid(), "delivered"))

    unsigned = server.status_callback(sid, "failed", 30008, sign=False)
    assert unsigned.status_code == 403
    no_status = server.status_callback(sid, "", to=whatsapp(ANA))
    assert no_status.status_code == 400
    assert status_of(greeting["id"]) == ("read", None)
    # The refusal's line may reach the log file just after its 403 reaches us.
    wait_until(lambda: "X-Twilio-Signature missing" in server.log_text(), 5,
               "the unsigned callback's log line")


# -- ops endpoints -------------------------------------------------------------------------


def test_healthz_and_metrics(fake: RecipientFakeTwilio, server_factory: ServerFactory) -> None:
    server = server_factory()
    health = server.health()
    assert health["status"] == "ok"
    assert health["database"] == "ok"
    assert health["dispatcher"]["running"] is True
    assert health["scheduler"] == "active"
    assert health["dry_run"] is False

    converse(server, fake, ANA, "hola", 1)
    settled(server, ANA, 1, status="queued")
    assert server.health()["dispatcher"]["pending"] == 0

    metrics = server.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "tertulia_messages_total" in metrics.text
    assert re.search(r'^tertulia_messages_total\{direction="in"\} 1\.0$', metrics.text,
                     re.MULTILINE), metrics.text


# -- Twilio faults -------------------------------------------------------------------------


def test_retryable_twilio_errors_are_retried_in_order_per_recipient(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"OUTBOX_MAX_ATTEMPTS": "4"})
    # Each message: a 500, then a 429, then accepted.
    for phone in (ANA, BETO):
        fake.script_for(phone, 500, 429, 201, 500, 429, 201)

    # Two users write at the same time; each sends both messages before any reply arrives.
    def user(phone: str) -> None:
        assert_twiml(server.send(phone, "hola"))
        assert_twiml(server.send(phone, "sí"))

    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(user, phone) for phone in (ANA, BETO)]:
            done.result()

    for phone in (ANA, BETO):
        rows = settled(server, phone, 2, timeout=20.0)
        assert [r["status"] for r in rows] == ["queued", "queued"]
        assert [r["attempts"] for r in rows] == [3, 3]
        # Delivered in the end: no error code left over from the failed tries.
        assert [r["error_code"] for r in rows] == [None, None]
        got = bodies(fake, phone)
        assert len(got) == 2, got
        assert GREETING in got[0] and ASK_NAME in got[1]
        # The second message was not even tried while the first was backing off.
        tried = [(r.status_code, GREETING in r.body) for r in fake.requests
                 if r.to == whatsapp(phone)]
        assert tried == [(500, True), (429, True), (201, True),
                         (500, False), (429, False), (201, False)]

    log = server.log_text()
    assert "retry 1" in log and "retry 2" in log
    assert ANA not in log and BETO not in log


def test_permanent_twilio_error_fails_at_once(fake: RecipientFakeTwilio,
                                              server_factory: ServerFactory) -> None:
    server = server_factory()
    fake.script_error(400, 21211)
    assert_twiml(server.send(ANA, "hola"))
    (row,) = settled(server, ANA, 1)
    assert row["status"] == "failed"
    assert row["error_code"] == 21211
    assert row["attempts"] == 1
    assert row["twilio_sid"] is None

    # Failed is final, so it is never picked up again; the next user is served.
    converse(server, fake, BETO, "hola", 1)
    settled(server, BETO, 1, status="queued")
    assert [r.status_code for r in fake.requests if r.to == whatsapp(ANA)] == [400]
    assert bodies(fake, ANA) == []
    log = server.log_text()
    assert "permanent error" in log
    assert ANA not in log


def test_pending_replies_survive_a_kill_and_go_out_after_restart(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"OUTBOX_MAX_ATTEMPTS": "20"})
    fake.down()
    assert_twiml(server.send(ANA, "hola"))
    (row,) = wait_until(
        lambda: [r for r in outbound(server, ANA) if r["attempts"] >= 1], 10.0,
        "a failed first attempt while Twilio is down")
    assert row["status"] in ("pending", "sending")

    assert server.kill() != 0
    assert outbound(server, ANA)[0]["status"] in ("pending", "sending")
    server.restart()
    fake.up()

    (sent,) = settled(server, ANA, 1, timeout=20.0)
    assert sent["status"] == "queued"
    assert sent["twilio_sid"] == fake.delivered[0].sid
    got = bodies(fake, ANA)
    assert len(got) == 1 and GREETING in got[0], got  # exactly once

    # The conversation itself survived too.
    converse(server, fake, ANA, "sí", 2)
    assert ASK_NAME in bodies(fake, ANA)[1]
    assert session_of(server, ANA)["state"] == "trial_request"


# -- modes and lifecycle -------------------------------------------------------------------


def test_dry_run_logs_instead_of_sending(fake: RecipientFakeTwilio,
                                         server_factory: ServerFactory) -> None:
    server = server_factory(credentials=False)
    assert server.health()["dry_run"] is True
    for text in ("hola", "sí", "Carla", "carla@example.com"):
        assert_twiml(server.send(CARLA, text, profile_name="Carla"))
    rows = settled(server, CARLA, 5)
    assert [r["status"] for r in rows] == ["dry_run"] * 5
    assert all(r["twilio_sid"] is None and r["sent_at"] is not None for r in rows)
    assert fake.requests == []
    assert session_of(server, CARLA)["close_reason"] == "credentials_delivered"

    log = server.log_text()
    assert "DRY RUN:" in log
    assert "SIGNATURE CHECK OFF" in log
    assert "DRY RUN to +5491155..." in log
    assert CARLA not in log and CARLA.lstrip("+") not in log
    # The credentials reach the log only in their redacted form.
    (trial,) = server.rows("SELECT username FROM trials WHERE phone = ?", (CARLA,))
    assert f"Usuario: {trial['username']}" in log
    logged = re.search(r"Contraseña: (\S+)", log)
    stored = re.search(r"Contraseña: (\S+)", rows[3]["body"])
    assert logged and stored, (rows[3]["body"], log[-3000:])
    assert logged.group(1) == stored.group(1)
    assert not re.fullmatch(r"[A-Za-z0-9]{12}", stored.group(1))  # not a generated password


def test_signature_behind_a_proxy_without_public_base_url(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"PUBLIC_BASE_URL": None})
    assert "PUBLIC_BASE_URL is not set" in server.log_text()
    origin = "https://bot.example.com"
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "bot.example.com"}
    form = server.inbound_form(DIEGO, "hola")

    # Signed for the public URL, arriving through a proxy that says so: accepted.
    assert_twiml(server.post_webhook(form, origin=origin, headers=forwarded))
    # The same signature without the forwarded headers does not match what we see.
    again = server.inbound_form(DIEGO, "hola")
    assert server.post_webhook(again, origin=origin).status_code == 403
    # Signed for the URL this server sees, no proxy: accepted.
    assert_twiml(server.post_webhook(again, origin=server.url))

    wait_until(lambda: fake.delivered, 10.0, "the greeting")
    assert fake.delivered[0].status_callback is None  # no public URL to call back
def test_sigterm_stops_gracefully(fake: RecipientFakeTwilio,
                                  server_factory: ServerFactory) -> None:
    server = server_factory()
    converse(server, fake, DIEGO, "hola", 1)
    settled(server, DIEGO, 1, status="queued")
    assert server.stop(timeout=10.0) == 0  # not -SIGTERM: uvicorn must not re-raise it
    log = server.log_text()
    assert "Application shutdown complete" in log
    assert "Finished server process" in log
    with pytest.raises(httpx.TransportError):
        server.get("/healthz")


def test_sigterm_while_twilio_is_down_leaves_the_reply_pending(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"OUTBOX_MAX_ATTEMPTS": "20"})
    fake.down()
    assert_twiml(server.send(ANA, "hola"))
    wait_until(lambda: [r for r in outbound(server, ANA) if r["attempts"] >= 1], 10.0,
               "a failed first attempt while Twilio is down")

    assert server.stop(timeout=15.0) == 0
    (row,) = outbound(server, ANA)
    assert row["status"] == "pending"  # never left `sending` by a clean stop
    assert row["twilio_sid"] is None

    fake.up()
    server.start()
    (sent,) = settled(server, ANA, 1, timeout=20.0)
    assert sent["status"] == "queued"
    got = bodies(fake, ANA)
    assert len(got) == 1 and GREETING in got[0], got
