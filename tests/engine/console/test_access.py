"""Who gets into the console, and which requests may change something.

The real app in-process: a login form and a signed cookie for browsers, a bearer token
for scripts, CSRF and Origin checks on every change, loopback only without a token.
"""

from __future__ import annotations

import logging

import pytest
from starlette.testclient import TestClient

from tests.engine.console.conftest import (
    ORIGIN,
    TOKEN,
    ClientFactory,
    bearer,
    csrf_of,
    log_in,
    say,
)

PHONE = "+5491133300001"
PAGES = ["/console/", "/console/simulator", "/console/ops", "/console/ops/sessions/1"]
API = ["/console/api/sessions", "/console/api/sessions/1", "/console/api/outbox",
       "/console/api/sim/stream?phone=%2B5491133300001"]


def open_session_id(client_factory: ClientFactory) -> tuple[TestClient, int]:
    client = client_factory(ADMIN_TOKEN=TOKEN)
    say(client, PHONE, "hola")
    sessions = client.get("/console/api/sessions", headers=bearer()).json()["sessions"]
    return client, sessions[0]["id"]


# -- off ----------------------------------------------------------------------------------


def test_without_a_token_the_console_is_off_and_says_how_to_turn_it_on(
    console_client: ClientFactory,
) -> None:
    client = console_client()
    for path in [*PAGES, *API, "/console/login"]:
        response = client.get(path)
        assert response.status_code == 404, path
        assert "ADMIN_TOKEN" in response.text
    assert client.post("/console/api/sim/messages", json={}).status_code == 404
    assert client.get("/healthz").status_code == 200  # the rest of the server is unchanged


# -- the token ----------------------------------------------------------------------------


def test_pages_send_a_stranger_to_the_login_form_and_the_api_answers_401(
    console_client: ClientFactory,
) -> None:
    client = console_client(ADMIN_TOKEN=TOKEN)
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/console/login?next=/console/")
    for path in API:
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert client.get(path, headers=bearer("x" * len(TOKEN))).status_code == 401
    assert client.get("/console/api/sessions", headers=bearer()).status_code == 200


def test_a_wrong_token_at_the_login_form_is_refused_and_logged(
    console_client: ClientFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    client = console_client(ADMIN_TOKEN=TOKEN)
    with caplog.at_level(logging.WARNING, logger="tertulia.console"):
        response = client.post("/console/login", data={"token": "not-the-token-at-all"},
                               headers={"origin": ORIGIN})
    assert response.status_code == 403
    assert "not the admin token" in response.text
    assert "set-cookie" not in response.headers
    assert "failed login from testclient" in caplog.text
    assert client.get("/console/ops").status_code == 303


def test_login_sets_an_httponly_strict_cookie_that_opens_the_pages(
    console_client: ClientFactory,
) -> None:
    client = console_client(ADMIN_TOKEN=TOKEN)
    response = client.post("/console/login", data={"token": TOKEN, "next": "/console/ops"},
                           headers={"origin": ORIGIN})
    assert response.status_code == 303
    assert response.headers["location"] == "/console/ops"
    cookie = response.headers["set-cookie"].lower()
    assert cookie.startswith("tertulia_console=")
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert TOKEN.lower() not in cookie
    page = client.get("/console/ops")
    assert page.status_code == 200 and "Conversations" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_a_cookie_signed_with_another_token_opens_nothing(
    console_client: ClientFactory,
) -> None:
    other = console_client(ADMIN_TOKEN="another-admin-token-0000")
    log_in(other, "another-admin-token-0000")
    cookie = other.cookies["tertulia_console"]
    client = console_client(ADMIN_TOKEN=TOKEN)
    client.cookies.set("tertulia_console", cookie, path="/console")
    assert client.get("/console/ops").status_code == 303


def test_login_never_redirects_to_another_site(console_client: ClientFactory) -> None:
    client = console_client(ADMIN_TOKEN=TOKEN)
    for target in ("https://evil.example/", "//evil.example/console/", "/elsewhere"):
        response = client.post("/console/login", data={"token": TOKEN, "next": target},
                               headers={"origin": ORIGIN})
        assert response.headers["location"] == "/console/simulator", target


def test_logging_out_ends_the_session(console_client: ClientFactory) -> None:
    client = console_client(ADMIN_TOKEN=TOKEN)
    csrf = log_in(client)
    response = client.post("/console/logout", data={"csrf": csrf}, headers={"origin": ORIGIN})
    assert response.status_code == 303
    assert client.get("/console/ops").status_code == 303


# -- changes: CSRF and Origin -------------------------------------------------------------


def test_a_close_without_the_csrf_token_or_from_another_origin_changes_nothing(
    console_client: ClientFactory,
) -> None:
    client, session_id = open_session_id(console_client)
    csrf = log_in(client)
    close = f"/console/ops/sessions/{session_id}/close"
    attempts = [
        ({"notify": "1"}, {"origin": ORIGIN}),
        ({"notify": "1", "csrf": "forged"}, {"origin": ORIGIN}),
        ({"notify": "1", "csrf": csrf}, {"origin": "https://evil.example"}),
    ]
    for data, headers in attempts:
        response = client.post(close, data=data, headers=headers)
        assert response.status_code == 403, (data, headers)
        assert "CSRF" in response.text
    detail = client.get(f"/console/api/sessions/{session_id}",
                        headers=bearer()).json()
    assert detail["session"]["open"] is True
    response = client.post(close, data={"notify": "1", "csrf": csrf},
                           headers={"origin": ORIGIN})
    assert response.status_code == 303
    assert response.headers["location"] == f"/console/ops/sessions/{session_id}"


def test_the_bearer_token_needs_no_csrf_but_still_no_foreign_origin(
    console_client: ClientFactory,
) -> None:
    client, session_id = open_session_id(console_client)
    close = f"/console/api/sessions/{session_id}/close"
    foreign = client.post(close, headers={**bearer(),
                                          "origin": "https://evil.example"})
    assert foreign.status_code == 403
    done = client.post(close, headers=bearer(), json={"notify": False})
    assert done.status_code == 200
    assert done.json()["session"]["close_reason"] == "admin"


def test_a_cookie_alone_cannot_post_to_the_simulator(console_client: ClientFactory) -> None:
    client = console_client(ADMIN_TOKEN=TOKEN)
    csrf = log_in(client)
    message = {"phone": PHONE, "text": "hola"}
    assert client.post("/console/api/sim/messages", json=message).status_code == 403
    sessions = client.get("/console/api/sessions", headers=bearer()).json()["sessions"]
    assert sessions == []
    sent = client.post("/console/api/sim/messages", json=message,
                       headers={"x-csrf-token": csrf, "origin": ORIGIN})
    assert sent.status_code == 200


# -- the full phone -----------------------------------------------------------------------


def test_pages_mask_phones_and_the_reveal_is_a_logged_post(
    console_client: ClientFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    client, session_id = open_session_id(console_client)
    csrf = log_in(client)
    for path in ("/console/ops", f"/console/ops/sessions/{session_id}",
                 "/console/api/sessions", f"/console/api/sessions/{session_id}"):
        shown = client.get(path, headers=bearer()).text
        assert PHONE not in shown, path
        assert PHONE[:8] + "..." in shown, path
    reveal = f"/console/ops/sessions/{session_id}/reveal"
    assert client.get(reveal).status_code == 405
    with caplog.at_level(logging.WARNING, logger="tertulia.console"):
        response = client.post(reveal, headers={"x-csrf-token": csrf,
                                                "origin": ORIGIN})
    assert response.status_code == 200 and PHONE in response.text
    line = next(r.getMessage() for r in caplog.records if "revealed" in r.getMessage())
    assert f"session {session_id}" in line and "login " in line and "testclient" in line


# -- loopback only, without a token ----------------------------------------------------------


def test_console_local_opens_to_loopback_only_with_a_banner(
    console_client: ClientFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="tertulia.console"):
        local = console_client(client=("127.0.0.1", 50000), base_url="http://127.0.0.1:8000",
                               CONSOLE_LOCAL="1")
    assert "WEB CONSOLE WITHOUT A TOKEN" in caplog.text
    page = local.get("/console/simulator")
    assert page.status_code == 200 and "CONSOLE_LOCAL: no login" in page.text
    csrf = csrf_of(page.text)
    sent = local.post("/console/api/sim/messages", json={"phone": PHONE, "text": "hola"},
                      headers={"x-csrf-token": csrf, "origin": "http://127.0.0.1:8000"})
    assert sent.status_code == 200
    rebound = local.get("/console/simulator", headers={"host": "evil.example"})
    assert rebound.status_code == 403  # a DNS-rebinding page names another host
    remote = console_client(CONSOLE_LOCAL="1")  # the client's address is "testclient"
    assert remote.get("/console/simulator").status_code == 403
    assert remote.get("/console/api/sessions").status_code == 403


def test_with_a_token_console_local_is_ignored(console_client: ClientFactory) -> None:
    client = console_client(client=("127.0.0.1", 50000), base_url="http://127.0.0.1:8000",
                            ADMIN_TOKEN=TOKEN, CONSOLE_LOCAL="1")
    assert client.get("/console/ops").status_code == 303
    assert client.get("/console/api/sessions").status_code == 401
