"""Issue 11, as an outsider attacks it: a real `tertulia serve`, requests on the wire.

Fail closed (half-set credentials, the signature check), which proxy headers count,
malformed headers and SIDs, oversized and aborted uploads, and phone numbers in logs
and CLI output. Every test here failed on the code before issue 11 (see README,
"Threat model"). The fixture's teardown fails a test whose server logged a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

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
from tests.support.paths import FLOWS
from tests.support.recipients import RecipientFakeTwilio

pytestmark = pytest.mark.e2e

ANA = "+5491155701001"
BETO = "+5491155701002"
# Short numbers are valid E.164 too, and were logged in full.
SHORT = ("+4477001", "+44770012", "+447700123")
LIMIT = 16 * 1024  # MAX_FORM_BYTES' default


def serve_once(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`tertulia serve` with these settings; it must stop by itself (a refusal)."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("TWILIO_", "PUBLIC_", "DATABASE_", "FLOWS_"))}
    clean.update(DATABASE_URL=f"sqlite:///{tmp_path / 't.db'}", FLOWS_DIR=str(FLOWS), **env)
    # A server that starts instead of refusing runs until this timeout: a failure.
    return subprocess.run([sys.executable, "-m", "engine", "serve", "--port", "0"],
                          cwd=tmp_path, env=clean, capture_output=True, text=True,
                          timeout=60, check=False)


def refused_lines(server: Server, status: int, count: int = 1) -> list[str]:
    """The log's "webhook refused" lines, once `count` of them are written."""
    def lines() -> list[str]:
        return [line for line in server.log_text().splitlines()
                if f"webhook refused ({status})" in line]

    wait_until(lambda: len(lines()) >= count, 10, f"{count} refusal line(s)")
    return lines()


# -- 1. fail closed ---------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID",
                                     "TWILIO_WHATSAPP_FROM"])
def test_half_set_credentials_stop_start_up_in_one_line(tmp_path: Path, missing: str) -> None:
    given = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
             "TWILIO_WHATSAPP_FROM": TWILIO_FROM}
    del given[missing]
    result = serve_once(tmp_path, **given)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and missing in lines[0], result.stderr
    assert "Traceback" not in result.stderr and AUTH_TOKEN not in result.stderr


def test_signature_check_off_with_credentials_stops_start_up(tmp_path: Path) -> None:
    result = serve_once(tmp_path, TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN,
                        TWILIO_WHATSAPP_FROM=TWILIO_FROM, TWILIO_SIGNATURE_CHECK="off")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TWILIO_SIGNATURE_CHECK" in lines[0], result.stderr


def test_dry_run_refuses_webhooks_unless_the_check_is_turned_off(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    closed = server_factory(credentials=False, env={"TWILIO_SIGNATURE_CHECK": None},
                            name="closed")
    assert closed.health()["dry_run"] is True
    assert closed.send(ANA, "hola").status_code == 403
    assert closed.post_webhook(closed.inbound_form(ANA, "hola"), sign=False).status_code == 403
    assert closed.rows("SELECT * FROM messages") == []
    assert "webhooks are refused (403)" in closed.log_text()

    local = server_factory(credentials=False, name="local")  # TWILIO_SIGNATURE_CHECK=off
    assert local.post_webhook(local.inbound_form(ANA, "hola"), sign=False).status_code == 200
    assert "!!! SIGNATURE CHECK OFF (TWILIO_SIGNATURE_CHECK=off)" in local.log_text()


# -- 2. proxies, malformed headers, SIDs ------------------------------------------------


def test_forwarded_headers_count_only_from_forwarded_allow_ips(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    origin = "https://bot.example.com"
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "bot.example.com"}
    # The test client is 127.0.0.1: not a trusted proxy here.
    server = server_factory(env={"PUBLIC_BASE_URL": None, "FORWARDED_ALLOW_IPS": "10.9.9.9"})
    form = server.inbound_form(ANA, "hola")
    assert server.post_webhook(form, origin=origin, headers=forwarded).status_code == 403
    assert server.rows("SELECT * FROM messages") == []
    # What this server sees is what counts: Host, over plain http.
    assert server.post_webhook(form, origin=server.url, headers=forwarded).status_code == 200

    # From a trusted peer (loopback, the default) the same forwarded request is taken.
    trusting = server_factory(env={"PUBLIC_BASE_URL": None}, name="trusting")
    again = trusting.inbound_form(BETO, "hola")
    assert trusting.post_webhook(again, origin=origin, headers=forwarded).status_code == 200
    # With X-Forwarded-Port, the port is part of the URL Twilio signed.
    ported = trusting.inbound_form(BETO, "sí")
    headers = {**forwarded, "X-Forwarded-Port": "8443"}
    assert trusting.post_webhook(ported, origin=origin + ":8443",
                                 headers=headers).status_code == 200


@pytest.mark.parametrize(("headers", "field"), [
    ({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "bot.example.com:bad"},
     "X-Forwarded-Host"),
    ({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "bot.example.com:99999"},
     "X-Forwarded-Host"),
    ({"X-Forwarded-Proto": "https", "X-Forwarded-Host": "bot.example.com",
      "X-Forwarded-Port": "x1"}, "X-Forwarded-Port"),
    ({"Host": "127.0.0.1:bad"}, "Host"),
])
def test_a_malformed_host_header_is_a_400_in_one_line(
    fake: RecipientFakeTwilio, server_factory: ServerFactory, headers: dict[str, str],
    field: str,
) -> None:
    server = server_factory(env={"PUBLIC_BASE_URL": None})
    response = server.post_webhook(server.inbound_form(ANA, "hola"), headers=headers)
    assert response.status_code == 400, response.text
    assert field in response.text
    (line,) = refused_lines(server, 400)
    assert field in line
    # The teardown checks the log holds no traceback.


def test_a_non_ascii_signature_is_a_400_not_a_500(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory()
    body = urlencode(server.inbound_form(ANA, "hola"))
    response = server.client.post("/twilio/whatsapp", content=body, headers={
        "Content-Type": FORM, "X-Twilio-Signature": "firmá✓".encode()})
    assert response.status_code == 400
    assert "X-Twilio-Signature" in response.text
    assert len(refused_lines(server, 400)) == 1
    assert server.rows("SELECT * FROM messages") == []


@pytest.mark.parametrize(("field", "value"), [
    ("MessageSid", "SMnot-a-sid"),
    ("MessageSid", "SM" + "0" * 31),
    ("MessageSid", "XX" + "0" * 32),
    ("MessageSid", "SM" + "A" * 32),
    ("AccountSid", "AC" + "f" * 32),  # well formed, but another account
    ("AccountSid", "nope"),
    ("AccountSid", None),
    ("From", ANA),  # no whatsapp: prefix, as an SMS would come
    ("From", "sms:" + ANA),
])
def test_signed_webhooks_with_made_up_sids_or_senders_are_refused(
    fake: RecipientFakeTwilio, server_factory: ServerFactory, field: str, value: str | None,
) -> None:
    server = server_factory()
    form = server.inbound_form(ANA, "hola", **{field: value})
    response = server.send(ANA, "hola", **{field: value}) if field != "From" else \
        server.post_webhook(form)
    assert response.status_code == 400, response.text
    assert server.rows("SELECT * FROM messages") == []
    assert fake.requests == []


def test_status_callbacks_need_twilio_sids_of_our_account(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory()
    assert server.send(ANA, "hola").status_code == 200
    sid = wait_until(lambda: server.rows("SELECT twilio_sid FROM messages WHERE twilio_sid "
                                         "IS NOT NULL AND direction = 'out'"))[0]["twilio_sid"]
    assert server.status_callback(sid[:-1] + "z", "delivered").status_code == 400
    assert server.status_callback(sid, "delivered",
                                  AccountSid="AC" + "f" * 32).status_code == 400
    (row,) = server.rows("SELECT status FROM messages WHERE twilio_sid = ?", (sid,))
    assert row["status"] != "delivered"
    assert server.status_callback(sid, "delivered").status_code == 200


# -- 3. cheap refusal: oversized forms --------------------------------------------------


def _chunks(size: int) -> Iterator[bytes]:
    sent = 0
    while sent < size:
        chunk = b"Body=" + b"x" * min(4096, size - sent)
        sent += len(chunk)
        yield chunk


def test_a_form_over_max_form_bytes_is_a_413_before_it_is_read(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory()
    # 20 KB: under the old 64 KB cap, it was read, parsed and hashed.
    big = urlencode({**server.inbound_form(ANA, "x" * (20 * 1024))})
    signed = {"X-Twilio-Signature": server.signature(server.inbound_form(ANA, "x")),
              "Content-Type": FORM}
    by_length = server.client.post("/twilio/whatsapp", content=big, headers=signed)
    assert by_length.status_code == 413
    streamed = server.client.post("/twilio/whatsapp", content=_chunks(LIMIT + 1),
                                  headers=signed)
    assert streamed.status_code == 413
    assert len(refused_lines(server, 413, 2)) == 2
    assert server.rows("SELECT * FROM messages") == []
    # Just under the cap is read as usual.
    form = server.inbound_form(ANA, "hola")
    padded = {**form, "Padding": "p" * (LIMIT - len(urlencode(form)) - len("&Padding=") - 1)}
    assert server.post_webhook(padded).status_code == 200


# -- 8. log flooding: an aborted upload ---------------------------------------------------


def test_an_aborted_upload_logs_one_short_line(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory()
    before = len(server.log_text())
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"POST /twilio/whatsapp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: 10000\r\n\r\n" + b"Body=" + b"x" * 300)
    wait_until(lambda: server.log_text().count("client disconnected before the body") == 3,
               10, "a line per aborted upload")
    added = server.log_text()[before:]
    assert "Traceback" not in added
    # About as many bytes as the clients sent, not 3.4 KB of traceback each.
    assert len(added) < 3 * 400, added
    assert server.health()["status"] == "ok"


# -- 6. masking: every phone, whatever its length -----------------------------------------


def _cli(server: Server, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "engine", *args], cwd=server.workdir,
                            env={**server.env, "PYTHONIOENCODING": "utf-8"},
                            capture_output=True, text=True, encoding="utf-8", timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def _digits_of(phones: tuple[str, ...]) -> list[str]:
    return [p.lstrip("+") for p in phones]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_short_phone_numbers_are_masked_in_logs_and_cli_output(
    fake: RecipientFakeTwilio, server_factory: ServerFactory, log_format: str,
) -> None:
    server = server_factory(env={"LOG_FORMAT": log_format, "LOG_LEVEL": "DEBUG"})
    for phone in SHORT:
        assert server.send(phone, "hola").status_code == 200
    wait_until(lambda: all(fake.delivered_to(whatsapp(p)) for p in SHORT), 10, "greetings")
    wait_until(lambda: server.log_text().count("created phone=") >= len(SHORT), 10,
               "a log line per session")
    log = server.log_text()
    leaked = [d for d in _digits_of(SHORT) if d in log]
    assert not leaked, f"full numbers in the log: {leaked}"
    if log_format == "json":
        events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        phones = [e["phone"] for e in events if "phone" in e]
        assert phones and all(p.endswith("...") for p in phones), phones

    listed = _cli(server, "sessions") + _cli(server, "sessions", "--json")
    listed += _cli(server, "sessions", "show", "1")
    assert not [d for d in _digits_of(SHORT) if d in listed], listed
    assert "+44..." in listed
    # Ops see a full number only when they ask for it.
    shown = _cli(server, "sessions", "--show-phones") + _cli(server, "sessions", "show", "1",
                                                              "--show-phones")
    assert all(p in shown for p in SHORT), shown


def test_a_mid_request_disconnect_does_not_kill_the_server(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    # The same abort with a body in flight on a kept-alive connection, then a real
    # request: the server answers it.
    server = server_factory()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /twilio/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 5000\r\n\r\nMessageSid=SM")
    wait_until(lambda: "client disconnected before the body" in server.log_text(), 10,
               "the one line")
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        assert client.get("/healthz").status_code == 200
    assert server.send(ANA, "hola", message_sid()).status_code == 200
