"""Bad input, property-based: never a 5xx from the webhooks, never a crash in the engine.

Against a running server (one per module; dry run, so without TWILIO_AUTH_TOKEN and no
signature check): random form fields (unknown keys, From, MessageSid, Body, media and
location fields), random bytes, invalid UTF-8, missing fields, wrong content types,
wrong methods and bodies over MAX_FORM_BYTES (16 KiB), against /twilio/whatsapp and
/twilio/status. The expected answer follows DESIGN.md's HTTP contract: 405 for a method
other than POST, 413 over MAX_FORM_BYTES, 400 for a body that is not form-encoded UTF-8
or lacks what the endpoint needs (a MessageSid and an AccountSid in Twilio's formats, a
`whatsapp:` sender), 200 otherwise; with a token, 403 for a bad or missing signature.

A second server with a token checks the 403s and signed status callbacks for SIDs
that exist. In process, random conversations (texts, media, waits, repeated
MessageSids) go through `Conversations.handle` on the `wiring` fixture: it never
raises, every reply fits WhatsApp's body limit, a repeated MessageSid gets no reply,
every state is one the trial flow declares, a phone has at most one open session,
every close_reason leads to its session's state, and no step fails (no `error` close).

Hypothesis runs derandomized (a fixed sequence of examples, so the suite is stable)
and without its example database; its caches go to the temp dir (tests/support/
plugin.py), so nothing is written in the working tree. The input bugs found while
writing these tests (Unicode digits, a trailing newline in From, an ErrorCode beyond
SQLite's integers) have regression tests at the bottom.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from engine.core.ports import Inbound
from engine.core.text import MAX_BODY
from engine.settings import Settings
from tests.support.harness import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FORM,
    Server,
    check_logs,
    wait_until,
)
from tests.support.recipients import RecipientFakeTwilio
from tests.support.trial import FINAL, OPEN, REASON_STATE, STATES, assert_sessions_consistent

HOOKS = ("/twilio/whatsapp", "/twilio/status")
PHONE = "+5491155800001"
MAX_BODY_BYTES = Settings.max_form_bytes
PROPS = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])
FEW = settings(PROPS, max_examples=30)

# E.164 as DESIGN.md has it: '+', then up to 15 ASCII digits, the first not 0. Only
# that is taken: not Unicode digits, nor a trailing newline (the regressions below).
_E164 = re.compile(r"whatsapp:\+[1-9][0-9]{6,14}")
_SID = re.compile(r"(SM|MM)[0-9a-f]{32}")
_ACCOUNT = re.compile(r"AC[0-9a-f]{32}")


# -- servers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Dry run, no token: no signature check, nothing sent anywhere."""
    server = Server(tmp_path_factory.mktemp("bad-input-open"), credentials=False)
    server.start()
    yield server
    try:
        assert_sessions_consistent(server.rows)
    finally:
        problems = check_logs([(server, False)])
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def module_fake() -> Iterator[RecipientFakeTwilio]:
    twilio = RecipientFakeTwilio(auth_token=AUTH_TOKEN).start()
    yield twilio
    twilio.stop()


@pytest.fixture(scope="module")
def signed_server(tmp_path_factory: pytest.TempPathFactory,
                  module_fake: RecipientFakeTwilio) -> Iterator[Server]:
    """With a token (signatures checked) and the fake; one sent message to know a SID."""
    server = Server(tmp_path_factory.mktemp("bad-input-signed"), twilio_api=module_fake.base_url)
    server.start()
    assert server.send(PHONE, "hola").status_code == 200
    wait_until(lambda: server.rows("SELECT twilio_sid FROM messages WHERE direction = 'out' "
                                   "AND twilio_sid IS NOT NULL"), what="a sent message")
    yield server
    problems = check_logs([(server, False)])
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def known_sid(server: Server) -> str:
    return str(server.rows("SELECT twilio_sid FROM messages WHERE direction = 'out' "
                           "AND twilio_sid IS NOT NULL LIMIT 1")[0]["twilio_sid"])


# -- strategies --------------------------------------------------------------------------

any_text = st.text(max_size=60)
phones = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)
sender = st.one_of(phones.map("whatsapp:".__add__), phones, any_text,
                   phones.map(lambda p: f"whatsapp:{p}x"), st.just("whatsapp:"))
sids = st.one_of(st.from_regex(r"SM[0-9a-f]{32}", fullmatch=True), any_text)
known_fields = st.fixed_dictionaries({}, optional={
    "From": sender, "MessageSid": sids, "Body": any_text, "ButtonPayload": any_text,
    "ProfileName": any_text, "NumMedia": st.one_of(st.sampled_from(["0", "1", "10"]), any_text),
    "MediaUrl0": any_text, "MessageType": st.one_of(
        st.sampled_from(["text", "image", "location", "interactive", "button", ""]), any_text),
    "Latitude": any_text, "MessageStatus": st.one_of(
        st.sampled_from(["queued", "sent", "delivered", "read", "failed", "undelivered"]),
        any_text),
    "ErrorCode": st.one_of(st.sampled_from(["63016", "30008", "0", ""]), any_text),
    "AccountSid": st.one_of(st.just(ACCOUNT_SID), any_text), "To": any_text,
})
# Unknown fields come first, so the known ones (first occurrence wins) are the ones read.
forms = st.tuples(st.lists(st.tuples(any_text, any_text), max_size=5), known_fields).map(
    lambda t: [*t[0], *t[1].items()])


def first(pairs: list[tuple[str, str]], key: str) -> str | None:
    return next((v for k, v in pairs if k == key), None)


def expected(path: str, pairs: list[tuple[str, str]]) -> set[int]:
    """The answers DESIGN.md allows for a well-formed form with these fields."""
    sid, account = first(pairs, "MessageSid") or "", first(pairs, "AccountSid") or ""
    if not _SID.fullmatch(sid) or not _ACCOUNT.fullmatch(account):
        return {400}
    if path == "/twilio/status":
        return {200} if first(pairs, "MessageStatus") else {400}
    return {200} if _E164.fullmatch(first(pairs, "From") or "") else {400}


def post(server: Server, path: str, body: bytes | str, content_type: str | None = FORM,
         **headers: str) -> httpx.Response:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return server.client.post(path, content=body, headers=headers)


# -- against the open server -------------------------------------------------------------


@PROPS
@given(path=st.sampled_from(HOOKS), pairs=forms)
def test_random_form_fields(open_server, path, pairs):
    response = post(open_server, path, urlencode(pairs))
    event(f"{path} -> {response.status_code}")
    assert response.status_code in expected(path, pairs), (response.status_code, response.text)
    if response.status_code == 200:
        assert response.headers["content-type"].startswith("text/xml")
        assert "<Response/>" in response.text


@PROPS
@given(path=st.sampled_from(HOOKS), raw=st.binary(max_size=300),
       poison=st.sampled_from([b"", b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"%", b"\x80"]))
@example(path=HOOKS[0], raw=b"From=whatsapp%3A%2B5491155800001&MessageSid=SMa&Body=",
         poison=b"\xfe")
def test_random_bytes_and_invalid_utf8(open_server, path, raw, poison):
    body = raw + poison
    response = post(open_server, path, body)
    event(f"{path} -> {response.status_code}")
    assert response.status_code in (200, 400), (response.status_code, response.text)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        assert response.status_code == 400


@PROPS
@given(path=st.sampled_from(HOOKS), missing=st.sampled_from(["From", "MessageSid",
                                                             "MessageStatus", "all"]))
def test_missing_fields(open_server, path, missing):
    fields = open_server.inbound_form(PHONE, "hola", MessageStatus="delivered")
    pairs = [] if missing == "all" else [(k, v) for k, v in fields.items() if k != missing]
    response = post(open_server, path, urlencode(pairs))
    needed = {"/twilio/whatsapp": ("From", "MessageSid"),
              "/twilio/status": ("MessageSid", "MessageStatus")}[path]
    assert response.status_code == (400 if missing in (*needed, "all") else 200)


content_types = st.one_of(
    st.sampled_from(["application/json", "text/plain", "text/xml", "application/xml",
                     "multipart/form-data; boundary=x", "application/octet-stream",
                     "application/x-www-form-urlencoded; charset=utf-8",
                     "APPLICATION/X-WWW-FORM-URLENCODED", "application/x-www-form-urlencodedx",
                     "application/x-www-form", "form"]),
    st.from_regex(r"[!-~]([ !-~]{0,40}[!-~])?", fullmatch=True),
    st.none(),  # no Content-Type header at all
)


@PROPS
@given(path=st.sampled_from(HOOKS), content_type=content_types)
def test_wrong_content_types(open_server, path, content_type):
    fields = open_server.inbound_form(PHONE, "hola", MessageStatus="delivered")
    response = post(open_server, path, urlencode(fields), content_type)
    event(f"-> {response.status_code}")
    media_type = (content_type or "").split(";")[0].strip().lower()
    assert response.status_code == (200 if media_type == FORM else 400), response.text


@PROPS
@given(path=st.sampled_from(HOOKS),
       method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
       pairs=forms)
def test_wrong_methods(open_server, path, method, pairs):
    response = open_server.client.request(method, path, content=urlencode(pairs),
                                          headers={"Content-Type": FORM})
    assert response.status_code == 405


def _chunks(size: int) -> Iterator[bytes]:
    sent = 0
    while sent < size:
        chunk = b"Body=" + b"x" * min(8192, size - sent)
        sent += len(chunk)
        yield chunk


@settings(PROPS, max_examples=20)
@given(path=st.sampled_from(HOOKS), size=st.integers(MAX_BODY_BYTES + 1, 4 * MAX_BODY_BYTES),
       chunked=st.booleans())
def test_huge_bodies(open_server, path, size, chunked):
    if chunked:  # no Content-Length: the server must count as it reads
        response = open_server.client.post(path, content=_chunks(size),
                                           headers={"Content-Type": FORM})
    else:
        response = post(open_server, path, b"Body=" + b"x" * (size - 5))
    assert response.status_code == 413


def test_body_of_exactly_max_form_bytes_is_read(open_server):
    fields = open_server.inbound_form(PHONE, "")
    encoded = urlencode(fields)
    body = encoded + "&Padding=" + "x" * (MAX_BODY_BYTES - len(encoded) - len("&Padding="))
    assert len(body.encode()) == MAX_BODY_BYTES
    assert post(open_server, HOOKS[0], body).status_code == 200


# -- against the server with a token -----------------------------------------------------


@FEW
@given(path=st.sampled_from(HOOKS), pairs=forms,
       how=st.sampled_from(["signed", "unsigned", "wrong token", "garbage", "other url"]),
       garbage=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=40))
def test_signatures(signed_server, path, pairs, how, garbage):
    params = dict(pairs)  # the harness signs a dict: keep one value per key
    body = urlencode(params)
    headers: dict[str, str] = {}
    if how == "signed":
        headers["X-Twilio-Signature"] = signed_server.signature(params, path=path)
    elif how == "wrong token":
        headers["X-Twilio-Signature"] = signed_server.signature(params, path=path,
                                                                token="not-the-token")
    elif how == "garbage" and garbage:
        headers["X-Twilio-Signature"] = garbage
    elif how == "other url":
        other = HOOKS[1] if path == HOOKS[0] else HOOKS[0]
        headers["X-Twilio-Signature"] = signed_server.signature(params, path=other)
    response = post(signed_server, path, body, **headers)
    event(f"{how} -> {response.status_code}")
    want = expected(path, list(params.items())) if how == "signed" else {403}
    assert response.status_code in want, (how, response.status_code, response.text)


@FEW
@given(status=st.one_of(st.sampled_from(["queued", "sent", "delivered", "read", "failed",
                                         "undelivered", "SENT", "sending"]), any_text),
       code=st.one_of(st.none(), st.sampled_from(["63016", "30008", "0", "", "-1", "1.5"]),
                      st.integers(0, 99999).map(str)))
def test_status_callbacks_for_a_known_message(signed_server, status, code):
    # Real codes are up to 5 digits; longer ones and Unicode digits have regression
    # tests of their own below.
    sid = known_sid(signed_server)
    response = signed_server.status_callback(sid, status, code)
    assert response.status_code in ((400,) if not status else (200,)), response.text
    (row,) = signed_server.rows("SELECT status FROM messages WHERE twilio_sid = ?", (sid,))
    assert row["status"] in {"queued", "sent", "delivered", "read", "failed", "undelivered",
                             "accepted", "scheduled"} | {status.lower()}


# -- in process: random texts through the engine -----------------------------------------

words = st.sampled_from(["hola", "sí", "si", "SÍ!!!", "no", "cancelar", "chau",
                         "gracias, adiós", "prueba", "quiero la prueba gratis", "Juan Pérez",
                         "ana@example.com", "mal@", "ayuda", "", " ", "\n"])
rtl = st.sampled_from(["مرحبا", "שלום עולם", "\u202eolleh\u202c", "\u200f", "سلام@example.com",
                       "أحمد علي"])
emoji = st.sampled_from(["👋", "👍🏽", "🇦🇷", "👨‍👩‍👧", "\ufe0f", "🙏", "sí 👍"])
controls = st.text(st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Zs"]), max_size=10)
piece = st.one_of(words, rtl, emoji, controls, st.text(max_size=80))
very_long = st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=30), st.integers(60, 400))
texts = st.one_of(piece, st.lists(piece, min_size=2, max_size=4).map(" ".join), very_long)
steps = st.lists(st.one_of(
    texts.map(lambda t: ("text", t)),
    st.sampled_from([timedelta(seconds=30), timedelta(minutes=4), timedelta(days=31)])
    .map(lambda d: ("wait", d)),
    st.sampled_from(["media", "location", "repeat"]).map(lambda k: (k, "")),
), min_size=1, max_size=12)
_phones = itertools.count(5491155900000)


@settings(PROPS, max_examples=120,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(conversation=steps, name=st.one_of(st.none(), piece))
def test_random_texts_never_break_the_engine(wiring, clock, conversation, name):
    # One phone per example (a fresh conversation, so a shrunk example replays the same).
    phone = f"+{next(_phones)}"
    last_sid = None
    for kind, value in conversation:
        if kind == "wait":
            clock.advance(value)
            continue
        repeat = kind == "repeat" and last_sid is not None
        sid = last_sid if repeat else f"SM{uuid.uuid4().hex}"
        inbound = Inbound(channel="whatsapp", phone=phone,
                          text=value if kind == "text" else "", message_id=sid,
                          profile_name=name, kind="text" if kind in ("text", "repeat") else kind)
        outbound = wiring.conversations.handle(inbound)
        last_sid = sid
        assert all(0 < len(o.body) <= MAX_BODY for o in outbound)
        if repeat:
            assert outbound == []  # a repeated MessageSid is not processed again
        with wiring.db.connect() as conn:
            sessions = conn.exec_driver_sql(
                "SELECT state, closed_at, close_reason FROM sessions WHERE phone = ?",
                (phone,)).all()
        assert sessions
        assert {s.state for s in sessions} <= STATES
        opened = [s for s in sessions if s.closed_at is None]
        assert len(opened) <= 1 and all(s.state in OPEN for s in opened)
        for s in sessions:
            if s.closed_at is not None:
                assert s.state in FINAL and REASON_STATE[s.close_reason] == s.state
                assert s.close_reason != "error", "a step failed on this text"


# -- regressions: input bugs found here, fixed since -----------------------------------


@pytest.fixture
def lenient_server(server_factory) -> Server:
    """A dry-run server: these inputs once gave 500s (Unicode digits, a trailing newline)."""
    return server_factory(credentials=False)


def test_num_media_with_a_unicode_digit(lenient_server):
    form = lenient_server.inbound_form(PHONE, "", NumMedia="²")
    assert post(lenient_server, HOOKS[0], urlencode(form)).status_code == 200


def test_status_error_code_with_a_unicode_digit(lenient_server):
    assert lenient_server.status_callback("SM" + "0" * 32, "failed", "²",
                                          sign=False).status_code == 200


def test_status_error_code_beyond_sqlite_integer(fake, server_factory):
    server = server_factory()
    assert server.send(PHONE, "hola").status_code == 200
    fake.wait_for(1)
    wait_until(lambda: server.rows("SELECT twilio_sid FROM messages WHERE direction = 'out' "
                                   "AND twilio_sid IS NOT NULL"), what="the greeting's SID")
    sid = known_sid(server)
    assert server.status_callback(sid, "undelivered", str(2**63)).status_code == 200
    # The status is taken; a code no real Twilio error has is not.
    assert server.rows("SELECT status, error_code FROM messages WHERE twilio_sid = ?",
                       (sid,)) == [{"status": "undelivered", "error_code": None}]


def test_from_must_be_strict_e164(lenient_server):
    response = lenient_server.send(PHONE, "hola", From=f"whatsapp:{PHONE}\n")
    assert response.status_code == 400
