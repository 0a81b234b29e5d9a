"""The web console in a real browser: headless Chromium against the real `tertulia serve`.

What a flow author and an operator do, through the pages: hold a conversation in the
simulator, watch the countdown reach zero and the timeout notice arrive, close a
conversation from the ops page (and see why a message failed), and be refused without
the token. With TERTULIA_SCREENSHOTS=1 they also refresh the README's screenshots.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import Chromium, open_chromium
from tests.support.harness import REPO, Server, wait_until, whatsapp
from tests.support.recipients import RecipientFakeTwilio

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ServerFactory = Callable[..., Server]

TOKEN = "browser-admin-token-41d7c2"
WEB_PHONE = "+5491144400001"
SHOTS = REPO / "docs"
TIMEOUT_NOTICE = "Cerramos tu sesión por inactividad"
ADMIN_NOTICE = "Cerramos esta conversación"


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    with open_chromium(tmp_path / "chromium-profile") as browser:
        yield browser
        assert browser.errors == [], f"JavaScript errors: {browser.errors}"


def console(server_factory: ServerFactory, **env: str) -> Server:
    return server_factory(env={"ADMIN_TOKEN": TOKEN, **env})


def log_in(page: Page, server: Server, target: str) -> None:
    """Open `target`, meet the login form, give the token, land on `target`."""
    page.goto(server.url + target)
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    expect(page).to_have_url(server.url + target)


def screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    if os.environ.get("TERTULIA_SCREENSHOTS") == "1":
        SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SHOTS / name), full_page=full_page)


def write(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def bot_said(page: Page, text: str) -> None:
    expect(page.locator(".bubble.bot", has_text=text)).to_have_count(1)


def seconds_left(page: Page) -> int:
    return int(page.locator("#countdown").get_attribute("data-left") or "-1")


# -- the simulator ------------------------------------------------------------------------


def test_a_flow_author_holds_a_whole_conversation_in_the_simulator(
    server_factory: ServerFactory, chromium: Chromium,
) -> None:
    server = console(server_factory)
    page = chromium.page
    log_in(page, server, f"/console/simulator?phone=%2B{WEB_PHONE[1:]}&name=Ana")
    expect(page.locator("#conn")).to_have_text("live")
    write(page, "hola")
    bot_said(page, "¡Hola, Ana! 👋")
    expect(page.locator(".bubble.me", has_text="hola")).to_have_count(1)
    expect(page.locator("#state")).to_have_text("greeting")
    expect(page.locator("#countdown")).to_have_text(re.compile(r"^[23]:\d\d$"))  # 3 min
    write(page, "sí")
    bot_said(page, "¿cómo te llamás?")
    write(page, "Ana Pérez")
    bot_said(page, "Gracias, Ana Pérez. Ahora pasame tu email")
    expect(page.locator("#state")).to_have_text("trial_request")
    expect(page.locator("#events li", has_text="greeting → trial_request [accept]")) \
        .to_have_count(1)
    expect(page.locator("#diagram g.current", has_text="trial_request")).to_have_count(1)
    screenshot(page, "console-simulator.png")
    write(page, "ana@mail.com")
    bot_said(page, "Tu prueba gratis está activa")
    expect(page.locator(".bubble.bot", has_text="Contraseña:")).to_have_count(1)
    expect(page.locator("#state")).to_have_text("closed · credentials_delivered")
    expect(page.locator("#countdown")).to_have_text("–")
    # The phone took every reply: nothing of channel web is left in the outbox.
    statuses = server.rows("SELECT status FROM messages WHERE channel = 'web' "
                           "AND direction = 'out'")
    assert len(statuses) == 5 and {r["status"] for r in statuses} == {"delivered"}
    assert chromium.foreign_requests(server.url) == []


def test_the_countdown_reaches_zero_and_the_timeout_notice_arrives(
    server_factory: ServerFactory, chromium: Chromium,
) -> None:
    server = console(server_factory, SESSION_TIMEOUT_MINUTES="0.15")  # 9 s
    page = chromium.page
    log_in(page, server, "/console/simulator")
    write(page, "hola")
    bot_said(page, "¡Hola! 👋")
    first = seconds_left(page)
    assert first > 1
    # It runs down by itself: the server sends nothing between the greeting and the close.
    page.wait_for_function(
        f"() => {{ const s = Number(document.getElementById('countdown').dataset.left);"
        f" return s > 0 && s < {first}; }}")
    expect(page.locator(".bubble.bot", has_text=TIMEOUT_NOTICE)).to_have_count(0)
    expect(page.locator("#countdown")).to_have_attribute("data-left", "0", timeout=20_000)
    bot_said(page, TIMEOUT_NOTICE)
    expect(page.locator("#state")).to_have_text("timeout · timeout")
    expect(page.locator("#countdown")).to_have_text("0:00")
    expect(page.locator("#events li", has_text="greeting → timeout [expire]")).to_have_count(1)
    rows = server.rows("SELECT state, close_reason FROM sessions")
    assert rows == [{"state": "timeout", "close_reason": "timeout"}]


# -- the ops page -------------------------------------------------------------------------


class _Attacker(BaseHTTPRequestHandler):
    """Another origin's page that posts a close form to the console (a CSRF attempt)."""

    target = ""

    def do_GET(self) -> None:
        body = (f'<link rel="icon" href="data:,"><form id="f" method="post" action="{self.target}">'
                '<input name="notify" value="1"></form>'
                '<button id="go" onclick="document.getElementById(\'f\').submit()">go</button>')
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def attacker() -> Iterator[Callable[[str], str]]:
    """`attacker(target)`: the URL of a page on another origin that posts to `target`."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def page_for(target: str) -> str:
        _Attacker.target = target
        return f"http://127.0.0.1:{httpd.server_address[1]}/"

    yield page_for
    httpd.shutdown()
    httpd.server_close()


def test_an_operator_finds_a_failed_message_and_closes_a_conversation(
    server_factory: ServerFactory, fake: RecipientFakeTwilio, chromium: Chromium,
    attacker: Callable[[str], str],
) -> None:
    server = console(server_factory)
    ana, blocked, busy = "+5491144400011", "+5491144400012", "+5491144400013"
    fake.script_error_for(blocked, 400, 21610)  # the user replied STOP
    for phone, texts in ((ana, ["hola"]), (blocked, ["hola"]), (busy, ["hola", "sí"])):
        for text in texts:
            assert server.send(phone, text).status_code == 200
    fake.wait_for(3)
    wait_until(lambda: server.rows("SELECT id FROM messages WHERE status = 'failed'"),
               what="the failed greeting")
    for phone, status in ((ana, "delivered"), (busy, "read")):
        for row in server.rows("SELECT twilio_sid FROM messages m JOIN sessions s ON "
                               "s.id = m.session_id WHERE s.phone = ? AND direction = 'out'",
                               (phone,)):
            assert server.status_callback(row["twilio_sid"], status).status_code == 200
    simulated = server.client.post("/console/api/sim/messages",
                                   headers={"authorization": f"Bearer {TOKEN}"},
                                   json={"phone": WEB_PHONE, "text": "hola"})
    assert simulated.status_code == 200
    page = chromium.page
    log_in(page, server, "/console/ops")
    table = page.locator("#sessions-table")
    expect(table.locator("tbody tr")).to_have_count(4)
    expect(page.locator("#outbound tr.status-delivered")).to_have_count(1)
    expect(page.locator("#outbound tr.status-pending")).to_contain_text("web")
    expect(table).to_contain_text("+5491144...")
    expect(table).not_to_contain_text(ana)
    failed = page.locator("#outbound tr.status-failed")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text("21610")
    expect(failed).to_contain_text("replied STOP")
    expect(page.locator("#counts")).to_contain_text("sessions open")
    expect(page.locator("#diagram svg")).to_have_count(1)  # Mermaid drew the flow
    screenshot(page, "console-ops.png", full_page=True)

    page.select_option("select[name=state]", "trial_request")
    page.click("#filters button[type=submit]")
    expect(table.locator("tbody tr")).to_have_count(1)
    page.goto(server.url + "/console/ops?state=greeting")
    ana_id = server.rows("SELECT id FROM sessions WHERE phone = ?", (ana,))[0]["id"]
    page.click(f"a[href='/console/ops/sessions/{ana_id}']")
    expect(page.locator("#session-state")).to_have_text("greeting")
    expect(page.locator("#transcript")).to_contain_text("¡Hola!")
    expect(page.locator("#diagram svg")).to_have_count(1)

    # A page on another origin cannot close it, though the browser holds the cookie.
    close_url = f"{server.url}/console/ops/sessions/{ana_id}/close"
    page.goto(attacker(close_url))
    page.click("#go")
    expect(page.locator("body")).to_contain_text("refused")
    assert server.rows("SELECT closed_at FROM sessions WHERE id = ?", (ana_id,)) == \
        [{"closed_at": None}]

    page.goto(f"{server.url}/console/ops/sessions/{ana_id}")
    page.click("#reveal")
    expect(page.locator("#phone-box")).to_have_text(ana)
    wait_until(lambda: f"full phone of session {ana_id} revealed to login" in
               server.log_text(), what="the reveal in the log")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#close-notify")
    expect(page.locator("#session-state")).to_have_text("closed")
    expect(page.locator("#close-reason")).to_have_text("closed: admin")
    fake.wait_for(4)
    assert ADMIN_NOTICE in fake.delivered_to(whatsapp(ana))[-1]
    assert chromium.foreign_requests(server.url, attacker(close_url)) == []


# -- refused ------------------------------------------------------------------------------


def test_without_the_token_the_pages_and_the_api_are_refused(
    server_factory: ServerFactory, chromium: Chromium,
) -> None:
    server = console(server_factory)
    page = chromium.page
    page.goto(server.url + "/console/ops")
    expect(page).to_have_url(re.compile(r"/console/login\?next=/console/ops$"))
    expect(page.locator("#sessions-table")).to_have_count(0)
    page.fill("#token", "not-the-admin-token")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_have_text("That is not the admin token.")
    page.goto(server.url + "/console/simulator")
    expect(page).to_have_url(re.compile(r"/console/login"))
    api = chromium.context.request.get(server.url + "/console/api/sessions")
    assert api.status == 401
    off = server_factory(env={"ADMIN_TOKEN": None})
    page.goto(off.url + "/console/ops")
    expect(page.locator("h1")).to_have_text("The web console is off")
