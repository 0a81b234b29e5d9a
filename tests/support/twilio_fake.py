"""Loopback fake of Twilio's Messages REST API (stdlib only).

``FakeTwilio`` serves ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``
on 127.0.0.1 from a daemon thread (one thread per connection, HTTP/1.1
keep-alive), answers like Twilio does, records every request and can inject
faults (scripted statuses, probabilistic 500/429/slow answers, latency, and a
full outage with ``down()``/``up()``).

Pointing the real twilio-python client (9.x) at it
--------------------------------------------------
twilio-python builds every URL as ``Domain.base_url + "/" + version + uri``
(``twilio/base/domain.py: Domain.absolute_url``), and ``client.messages`` is
``client.api.account.messages``.  ``Domain.base_url`` is read on every call,
so overriding the ``api`` domain's base URL is enough::

    from twilio.rest import Client

    with FakeTwilio() as fake:
        client = Client("AC" + "0" * 32, "token")
        client.api.base_url = fake.base_url          # <- the only wiring needed
        msg = client.messages.create(to="whatsapp:+34600000001",
                                     from_="whatsapp:+14155238886", body="hola")
        assert fake.delivered_to("whatsapp:+34600000001") == ["hola"]

Caveats:

* Do not give the client a ``region``/``edge`` (nor set ``TWILIO_REGION`` /
  ``TWILIO_EDGE``): ``ClientBase.get_hostname`` would then rewrite the netloc
  ``127.0.0.1:PORT`` as if it were ``api.twilio.com`` and mangle it.
* twilio's ``TwilioHttpClient`` uses a ``requests.Session`` that honours
  ``HTTP(S)_PROXY``; if a proxy is configured either set ``NO_PROXY=127.0.0.1``
  or ``client.http_client.session.trust_env = False``.
* The session keeps pooled keep-alive connections; close it
  (``client.http_client.session.close()``) when done so no socket is left for
  the garbage collector.
* twilio-python raises ``TwilioRestException`` (``.status``, ``.code``) for
  non-2xx answers, but does NOT wrap transport errors: with ``down()`` the
  client gets ``requests.exceptions.ConnectionError``.

Request handling order
----------------------
1. unknown path -> 404 (code 20404); other method on Messages.json -> 405
   (code 20004);
2. missing/invalid Basic auth, username != AccountSid in the path, or (when
   ``auth_token`` was given) wrong password -> 401 (code 20003);
3. fault injection, ``decide(form)``: in precedence order the ``script``/
   ``script_error`` queue, then ``always``, then ``fail_rates`` -> the chosen
   error status (subclasses override ``decide``, which receives the request's form);
4. validation like Twilio's (21604 no To, 21603 no From/MessagingServiceSid,
   21602 no Body/MediaUrl/ContentSid) -> 400;
5. otherwise 201 with the message JSON.

``latency`` (plus the extra ``slow_seconds`` of a "slow" fault) is applied to
every answer, concurrently per connection.  A request still waiting when
``down()``/``stop()`` is called gets its connection dropped without an answer
and is recorded with ``status_code == 0``.  Scripted statuses are consumed
only by requests that pass routing and auth.

CLI (for benchmarks)::

    python -m tests.support.twilio_fake --port 0 --latency 0.05 [--record F.jsonl]

prints ``listening http://127.0.0.1:PORT`` on one flushed stdout line, serves
until SIGTERM/SIGINT and appends one JSON object per request (the fields of
``Recorded``) to the record file.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import collections
import contextlib
import dataclasses
import email.utils
import json
import math
import os
import random
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import IO, Any, Final, Self, cast
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Decision", "FakeTwilio", "Recorded", "default_error_code", "main"]

API_VERSION: Final = "2010-04-01"
_MESSAGES_PREFIX: Final = f"/{API_VERSION}/Accounts/"
_MESSAGES_SUFFIX: Final = "/Messages.json"
_MAX_BODY: Final = 1 << 20

STATUS_DROPPED: Final = 0
"""``Recorded.status_code`` of a request cut off by ``down()``/``stop()``."""

_ERROR_MESSAGES: Final[dict[int, str]] = {
    20003: "Authenticate",
    20004: "Method not allowed",
    20404: "The requested resource {path} was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20503: "Worker Unavailable",
    21211: "Invalid 'To' Phone Number: {to}",
    21408: "Permission to send an SMS has not been enabled for the region "
    "indicated by the 'To' number: {to}",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    63016: "Failed to send freeform message because you are outside the allowed "
    "window. If you are using WhatsApp, please use a Message Template.",
}

_GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXT: Final = frozenset("^{}\\[~]|€\f")


def default_error_code(status: int) -> int:
    """Twilio-style error code used when a status is injected without one."""
    if status == 401:
        return 20003
    if status == 404:
        return 20404
    if status == 405:
        return 20004
    if status == 400:
        return 21211
    return 20000 + status


def _error_message(code: int, status: int, to: str, path: str) -> str:
    template = _ERROR_MESSAGES.get(code)
    if template is None:
        return f"Fake Twilio error {code} (HTTP {status})"
    return template.format(to=to, path=path)


def _num_segments(body: str, to: str) -> int:
    if to.startswith("whatsapp:") or not body:
        return 1
    if all(c in _GSM7_BASIC or c in _GSM7_EXT for c in body):
        units = len(body) + sum(1 for c in body if c in _GSM7_EXT)
        single, multi = 160, 153
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if units <= single else math.ceil(units / multi)


def _rfc2822_now() -> str:
    return email.utils.format_datetime(datetime.now(UTC))


@dataclasses.dataclass(frozen=True)
class Recorded:
    """One request as the fake saw it (accepted, faulted or dropped)."""

    account_sid: str
    to: str
    from_: str
    body: str
    status_callback: str | None
    status_code: int
    sid: str | None
    at: float
    """``time.monotonic()`` when the request (headers and body) arrived."""
    form: dict[str, str]
    """Decoded form body; a repeated key (e.g. ``MediaUrl``) keeps its last value."""
    path: str = ""


@dataclasses.dataclass(frozen=True)
class Decision:
    """How the fake answers one authenticated request: a status, its Twilio error code
    (None for 201) and the seconds to wait before answering."""

    status: int
    code: int | None
    delay: float


def _check_status(status: int) -> None:
    if status != 201 and not 400 <= status <= 599:
        raise ValueError(f"status must be 201 or 400..599, got {status}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeTwilio) -> None:
        self.fake = fake
        self.closed = threading.Event()
        self._conns_lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which may do a slow
        # reverse DNS lookup; we know who we are.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, conn: socket.socket) -> bool:
        with self._conns_lock:
            if self.closed.is_set():
                return False
            self._conns.add(conn)
            return True

    def untrack(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.discard(conn)

    def drop_connections(self) -> None:
        with self._conns_lock:
            self.closed.set()
            conns = list(self._conns)
            self._conns.clear()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: object, client_address: object) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return  # client went away / connection dropped by down()
        traceback.print_exc()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeTwilio/1.0"
    sys_version = ""
    timeout = 300
    # One send() per response and no Nagle: otherwise headers and body leave
    # in two segments and the client's delayed ACK adds ~40 ms per request.
    disable_nagle_algorithm = True
    wbufsize = -1

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def _srv(self) -> _Server:
        return cast(_Server, self.server)

    def handle(self) -> None:
        srv = self._srv
        if not srv.track(self.connection):
            return
        try:
            super().handle()
        finally:
            srv.untrack(self.connection)

    def do_POST(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _read_form(self) -> tuple[dict[str, str], int] | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return None
        try:
            length = int(self.headers.get("Content-Length", "0") or "0")
        except ValueError:
            return None
        if length < 0 or length > _MAX_BODY:
            return None
        raw = self.rfile.read(length) if length else b""
        pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        media = sum(1 for k, _ in pairs if k == "MediaUrl")
        return dict(pairs), media

    def _dispatch(self) -> None:
        srv = self._srv
        fake = srv.fake
        if srv.closed.is_set():
            self.close_connection = True
            return
        read = self._read_form()
        if read is None:
            self.close_connection = True
            self._send_json(
                411,
                {"code": 20000 + 411, "message": "Length Required", "more_info": "", "status": 411},
            )
            return
        form, num_media = read
        at = time.monotonic()
        fake._enter()
        try:
            self._answer(srv, fake, form, num_media, at)
        finally:
            fake._leave()

    def _answer(
        self, srv: _Server, fake: FakeTwilio, form: dict[str, str], num_media: int, at: float
    ) -> None:
        path = urlsplit(self.path).path

        account_sid = ""
        routed = False
        if path.startswith(_MESSAGES_PREFIX) and path.endswith(_MESSAGES_SUFFIX):
            account_sid = path[len(_MESSAGES_PREFIX) : -len(_MESSAGES_SUFFIX)]
            routed = bool(account_sid) and "/" not in account_sid
            if not routed:
                account_sid = ""
        to = form.get("To", "")

        status: int
        code: int | None
        headers: dict[str, str] = {}
        if not routed:
            status, code, delay = 404, 20404, fake._current_latency()
        elif self.command != "POST":
            status, code, delay = 405, 20004, fake._current_latency()
        elif not fake._auth_ok(self.headers.get("Authorization"), account_sid):
            status, code, delay = 401, 20003, fake._current_latency()
            headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        else:
            decision = fake.decide(form)
            status, code, delay = decision.status, decision.code, decision.delay
            if status == 201:
                if not to:
                    status, code = 400, 21604
                elif not form.get("From") and not form.get("MessagingServiceSid"):
                    status, code = 400, 21603
                elif not (form.get("Body") or num_media or form.get("ContentSid")):
                    status, code = 400, 21602

        # closed.wait() returns early (True) if down()/stop() happens meanwhile
        if (delay > 0 and srv.closed.wait(delay)) or srv.closed.is_set():
            status, code = STATUS_DROPPED, None

        sid = "SM" + uuid.uuid4().hex if status == 201 else None
        fake._record(
            Recorded(
                account_sid=account_sid,
                to=to,
                from_=form.get("From", ""),
                body=form.get("Body", ""),
                status_callback=form.get("StatusCallback"),
                status_code=status,
                sid=sid,
                at=at,
                form=form,
                path=path,
            )
        )
        if status == STATUS_DROPPED:
            self.close_connection = True
            return
        if sid is not None:
            self._send_json(201, _message_json(sid, account_sid, form, num_media))
            return
        assert code is not None
        self._send_json(
            status,
            {
                "code": code,
                "message": _error_message(code, status, to, path),
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            headers,
        )

    def _send_json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Twilio-Request-Id", "RQ" + uuid.uuid4().hex)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def _message_json(
    sid: str, account_sid: str, form: dict[str, str], num_media: int
) -> dict[str, Any]:
    now = _rfc2822_now()
    to = form.get("To", "")
    body = form.get("Body", "")
    from_ = form.get("From") or None
    service = form.get("MessagingServiceSid") or None
    base = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}"
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": body,
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": from_,
        "messaging_service_sid": service,
        "num_media": str(num_media),
        "num_segments": str(_num_segments(body, to)),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "accepted" if service and not from_ else "queued",
        "subresource_uris": {"media": f"{base}/Media.json"},
        "to": to,
        "uri": f"{base}.json",
    }


class FakeTwilio:
    """Threaded loopback fake of Twilio's Messages API; see the module docstring.

    All methods are thread-safe and the fault settings may be changed while
    the server is running.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        auth_token: str | None = None,
        record_file: str | os.PathLike[str] | None = None,
        keep_records: bool = True,
        poll_interval: float = 0.05,
    ) -> None:
        self._host = host
        self._port = port
        self._auth_token = auth_token
        self._record_path = record_file
        self._keep = keep_records
        self._poll = poll_interval

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._records: list[Recorded] = []
        self._script: collections.deque[tuple[int, int | None]] = collections.deque()
        self._always: tuple[int, int | None] | None = None
        self._p500 = 0.0
        self._p429 = 0.0
        self._p_slow = 0.0
        self._slow_seconds = 0.0
        self._rng = random.Random(0)
        self._latency = 0.0
        self._in_flight = 0

        self._lifecycle = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._started = False
        self._file_lock = threading.Lock()
        self._file: IO[str] | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Bind and serve in a daemon thread. Returns ``self``."""
        with self._lifecycle:
            if self._started:
                raise RuntimeError("FakeTwilio already started")
            if self._record_path is not None:
                # closed by stop(); lives as long as the server
                self._file = open(self._record_path, "a", encoding="utf-8")  # noqa: SIM115
            try:
                self._open()
            except BaseException:
                self._close_file()
                raise
            self._started = True
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and close the record file."""
        with self._lifecycle:
            self._close()
            self._started = False
            self._close_file()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def down(self) -> None:
        """Close the listening socket and every open connection (clients get
        connection refused / reset) until ``up()``. Idempotent."""
        with self._lifecycle:
            if not self._started:
                raise RuntimeError("FakeTwilio not started")
            self._close()

    def up(self) -> None:
        """Listen again on the SAME port after ``down()``. Idempotent."""
        with self._lifecycle:
            if not self._started:
                raise RuntimeError("FakeTwilio not started")
            if self._server is None:
                self._open()

    @property
    def is_up(self) -> bool:
        with self._lifecycle:
            return self._server is not None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        with self._lifecycle:
            if self._port == 0:
                raise RuntimeError("port unknown until start()")
            return self._port

    @property
    def base_url(self) -> str:
        """E.g. ``"http://127.0.0.1:54321"`` (assign to ``client.api.base_url``)."""
        return f"http://{self._host}:{self.port}"

    def _open(self) -> None:
        last: OSError | None = None
        for _ in range(50):
            try:
                server = _Server((self._host, self._port), self)
                break
            except OSError as e:  # port still held briefly after down()
                if self._port == 0:
                    raise
                last = e
                time.sleep(0.02)
        else:
            assert last is not None
            raise last
        self._port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": self._poll},
            name=f"FakeTwilio:{self._port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread

    def _close(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.closed.set()  # wake requests sleeping in latency; refuse new ones
        server.shutdown()
        server.server_close()
        server.drop_connections()
        if thread is not None:
            thread.join()

    def _close_file(self) -> None:
        with self._file_lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    # ------------------------------------------------------------ faults
    def script(self, *statuses: int) -> None:
        """Queue statuses for the next requests (appended to any queued ones);
        each answers once, in order, then behaviour is normal again. 201 means
        "answer normally"; 4xx/5xx answer Twilio-style error JSON with
        ``default_error_code(status)`` (429 -> 20429, 500 -> 20500, ...)."""
        for status in statuses:
            _check_status(status)
        with self._lock:
            self._script.extend((s, None) for s in statuses)

    def script_error(self, status: int, code: int) -> None:
        """Queue one error answer with an explicit Twilio code, e.g.
        ``script_error(400, 21211)`` or ``script_error(400, 21610)``."""
        _check_status(status)
        if status == 201:
            raise ValueError("script_error needs an error status")
        with self._lock:
            self._script.append((status, code))

    def always(self, status: int | None, code: int | None = None) -> None:
        """Answer every request (after the script queue) with ``status``;
        ``always(None)`` resets."""
        if status is None:
            with self._lock:
                self._always = None
            return
        _check_status(status)
        with self._lock:
            self._always = (status, code)

    def fail_rates(
        self,
        error_500: float = 0.0,
        error_429: float = 0.0,
        slow: float = 0.0,
        slow_seconds: float = 1.0,
        seed: int = 0,
    ) -> None:
        """Probabilistic faults with ``random.Random(seed)``: each request is a
        500 with probability ``error_500``, else a 429 with ``error_429``; and,
        independently, waits an extra ``slow_seconds`` with probability
        ``slow``. All zeros disables."""
        for p in (error_500, error_429, slow):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"probability out of range: {p}")
        if error_500 + error_429 > 1.0:
            raise ValueError("error_500 + error_429 must be <= 1")
        if slow_seconds < 0:
            raise ValueError("slow_seconds must be >= 0")
        with self._lock:
            self._p500, self._p429 = error_500, error_429
            self._p_slow, self._slow_seconds = slow, slow_seconds
            self._rng = random.Random(seed)

    def latency(self, seconds: float) -> None:
        """Every answer waits ``seconds`` (per request, concurrently)."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        with self._lock:
            self._latency = seconds

    def reset(self) -> None:
        """Clear every fault setting (script queue, always, rates, latency)."""
        with self._lock:
            self._script.clear()
            self._always = None
            self._p500 = self._p429 = self._p_slow = 0.0
            self._slow_seconds = 0.0
            self._rng = random.Random(0)
            self._latency = 0.0

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._records.clear()

    @property
    def in_flight(self) -> int:
        """Requests received but not answered yet (e.g. sleeping in latency)."""
        with self._lock:
            return self._in_flight

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _current_latency(self) -> float:
        with self._lock:
            return self._latency

    def decide(self, form: Mapping[str, str]) -> Decision:
        """The answer to one request that passed routing and auth; `form` is its body.

        This one ignores `form` (the script queue, ``always`` and ``fail_rates`` apply
        to every request alike); a subclass overrides it to fault requests by what
        they carry, e.g. their ``To`` (tests/support/recipients.py).
        """
        with self._lock:
            delay = self._latency
            code: int | None
            if self._script:
                status, code = self._script.popleft()
            elif self._always is not None:
                status, code = self._always
            else:
                status, code = 201, None
                if self._p500 or self._p429:
                    r = self._rng.random()
                    if r < self._p500:
                        status = 500
                    elif r < self._p500 + self._p429:
                        status = 429
            if self._p_slow and self._rng.random() < self._p_slow:
                delay += self._slow_seconds
        if status != 201 and code is None:
            code = default_error_code(status)
        return Decision(status, code, delay)

    def _auth_ok(self, header: str | None, account_sid: str) -> bool:
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        if not sep or user != account_sid:
            return False
        return self._auth_token is None or password == self._auth_token

    # ------------------------------------------------------------ records
    def _record(self, rec: Recorded) -> None:
        with self._cond:
            if self._keep:
                bisect.insort(self._records, rec, key=lambda r: r.at)
            self._cond.notify_all()
        with self._file_lock:
            if self._file is not None:
                self._file.write(json.dumps(dataclasses.asdict(rec)) + "\n")
                self._file.flush()

    @property
    def requests(self) -> list[Recorded]:
        """Every request (accepted, faulted, dropped), in arrival order."""
        with self._lock:
            return list(self._records)

    @property
    def delivered(self) -> list[Recorded]:
        """Only the requests answered 201, in arrival order."""
        with self._lock:
            return [r for r in self._records if r.status_code == 201]

    def delivered_to(self, to: str) -> list[str]:
        """Bodies of the 201s sent to ``to``, in arrival order."""
        return [r.body for r in self.delivered if r.to == to]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Recorded]:
        """Wait until at least ``count`` 201s were recorded and return all the
        delivered ones; raise AssertionError describing what arrived if
        ``timeout`` elapses first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                delivered = [r for r in self._records if r.status_code == 201]
                if len(delivered) >= count:
                    return delivered
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            statuses = collections.Counter(r.status_code for r in self._records)
        got = [(r.to, r.body) for r in delivered]
        raise AssertionError(
            f"expected >= {count} delivered messages within {timeout}s, got "
            f"{len(delivered)}: {got!r}; status codes of all "
            f"{sum(statuses.values())} requests: {dict(statuses)!r}"
        )

    def max_rate(self, window: float = 1.0) -> float:
        """Highest number of 201s arriving within any ``window`` seconds
        (half-open sliding window), divided by ``window``."""
        if window <= 0:
            raise ValueError("window must be > 0")
        times = [r.at for r in self.delivered]
        best = 0
        i = 0
        for j, t in enumerate(times):
            while t - times[i] >= window:
                i += 1
            best = max(best, j - i + 1)
        return best / window


# ---------------------------------------------------------------- CLI
class _Shutdown(BaseException):
    pass


def _raise_shutdown(signum: int, frame: FrameType | None) -> None:
    raise _Shutdown


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.twilio_fake",
        description="Loopback fake of Twilio's Messages API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--record", metavar="FILE.jsonl", default=None)
    parser.add_argument("--auth-token", default=None)
    parser.add_argument("--error-500", type=float, default=0.0)
    parser.add_argument("--error-429", type=float, default=0.0)
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--slow-seconds", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    fake = FakeTwilio(
        args.port,
        host=args.host,
        auth_token=args.auth_token,
        record_file=args.record,
        keep_records=False,
    )
    fake.latency(args.latency)
    fake.fail_rates(args.error_500, args.error_429, args.slow, args.slow_seconds, args.seed)
    previous = {sig: signal.signal(sig, _raise_shutdown) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        fake.start()
        print(f"listening {fake.base_url}", flush=True)
        while True:
            time.sleep(3600)
    except _Shutdown:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
