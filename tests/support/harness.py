"""End-to-end harness: the real `tertulia serve` process, driven like Twilio drives it.

Nothing of ours is mocked. A test starts the server as a subprocess (its own working
directory, SQLite file and log file), posts webhooks signed exactly as Twilio signs
them, lets the server's real twilio-python client talk to the loopback fake of the
Messages API (tests/support/twilio_fake.py), and then checks what the user received
(the fake's records) and what ops read (sqlite3 on the database file).

Typical use, through the fixtures `fake` and `server_factory` (tests/support/plugin.py)::

    def test_hello(fake, server_factory):
        server = server_factory()                    # started and healthy
        assert server.send(PHONE, "hola", profile_name="Ana").status_code == 200
        fake.wait_for(1)
        assert "Ana" in fake.delivered_to(whatsapp(PHONE))[0]
        rows = server.rows("SELECT status FROM messages WHERE direction = 'out'")

Without the fixtures::

    with FakeTwilio() as fake, Server(tmp_path, twilio_api=fake.base_url) as server:
        ...

`RecipientFakeTwilio` (tests/support/recipients.py) adds fault scripts per recipient
to the fake, so concurrent conversations can each get their own 500s and 429s.

Waiting is always by polling with a bound (`wait_until`, `FakeTwilio.wait_for`), never
by sleeping a fixed time; no assertion depends on how fast something happened.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlencode

import httpx
from twilio.request_validator import RequestValidator

from tests.support.paths import FLOWS, REPO

__all__ = [
    "ACCOUNT_SID",
    "AUTH_TOKEN",
    "FLOWS",
    "FORM",
    "REPO",
    "TWILIO_FROM",
    "Server",
    "ServerFactory",
    "Servers",
    "check_logs",
    "db_rows",
    "free_port",
    "message_sid",
    "run_threads",
    "wait_until",
    "whatsapp",
]

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "e2e-auth-token-5f3c9a1b7d"  # distinctive, so a leak into the log is findable
TWILIO_FROM = "whatsapp:+14155238886"
FORM = "application/x-www-form-urlencoded"

HEALTH_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0

# Settings tertulia reads (engine/config.py): a developer's shell must not leak into a
# run. TWILIO_EDGE / TWILIO_REGION would make twilio-python rewrite the fake's host.
_OURS = re.compile(
    r"^(DATABASE_URL|FLOWS_DIR|DEFAULT_FLOW|SESSION_\w+|SWEEP_\w+|STATS_\w+|TRIAL_\w+"
    r"|CREDENTIAL_PROVIDER|TWILIO_\w+|PUBLIC_BASE_URL|OUTBOX_\w+|LOG_LEVEL|LOG_FORMAT"
    r"|SQLITE_\w+|TIMEOUT_\w+|SCHEDULER_\w+|INTENT_\w+|ADMIN_TOKEN|CONSOLE_\w+"
    r"|FORWARDED_ALLOW_IPS|MAX_\w+|RATE_LIMIT_\w+|CREDENTIALS_KEY)$"
)

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def message_sid(prefix: str = "SM") -> str:
    """A fresh Twilio-style SID: the prefix plus 32 hex digits."""
    return prefix + uuid.uuid4().hex


def whatsapp(phone: str) -> str:
    """'+5491155500001' -> 'whatsapp:+5491155500001', as Twilio addresses it."""
    return phone if phone.startswith("whatsapp:") else f"whatsapp:{phone}"


def wait_until(
    predicate: Callable[[], T | Literal[False] | None], timeout: float = 10.0,
    what: str = "the condition", interval: float = 0.05,
) -> T:
    """Poll `predicate` until it returns something truthy, and return that value.

    Raises AssertionError naming `what` (and the last value seen) after `timeout` s.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                                 f"last value: {value!r}")
        time.sleep(interval)


def db_rows(db_path: Path | str, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    """Run one query with plain sqlite3, as ops would, and return the rows as dicts."""
    with closing(sqlite3.connect(db_path, timeout=10)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params)]


def pg_rows(url: str, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    """`db_rows` on PostgreSQL, with sqlite3's `?` placeholders."""
    from sqlalchemy import create_engine

    db = create_engine(url)
    try:
        with db.connect() as conn:
            query = sql.replace("%", "%%").replace("?", "%s")
            result = conn.exec_driver_sql(query, tuple(params))
            return [{k: _as_sqlite(v) for k, v in r._mapping.items()} for r in result]
    finally:
        db.dispose()


def _as_sqlite(value: Any) -> Any:
    """A PostgreSQL value as sqlite3 returns the same column, so one assertion reads
    both: times as SQLAlchemy's DateTime text, JSON as its text."""
    import datetime
    import json

    if isinstance(value, datetime.datetime):
        return value.isoformat(" ", "microseconds")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def run_threads(targets: Iterable[Callable[[], None]], timeout: float) -> list[BaseException]:
    """Run each target in a thread, join them (bounded), return what they raised."""
    errors: list[BaseException] = []
    lock = threading.Lock()

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    alive = [t for t in threads if t.is_alive()]
    if alive:
        errors.append(AssertionError(f"{len(alive)} thread(s) still running after {timeout} s"))
    return errors


class Server:
    """One `python -m engine serve` subprocess and the ways Twilio and ops talk to it.

    - `workdir` is its working directory; the database defaults to `workdir/t.db` and
      the log (stdout and stderr, appended across restarts) to `workdir/server.log`.
    - `twilio_api` is the Messages API base URL (the fake's `base_url`).
    - `credentials=False` leaves the TWILIO_* credentials unset: dry-run mode, with the
      signature check turned off explicitly (TWILIO_SIGNATURE_CHECK=off), as for local use.
    - `env` overrides or adds variables; a value of None removes one. Without
      PUBLIC_BASE_URL, `post_webhook` signs for the URL the server sees (`url`), or
      for the `origin` a test passes along with X-Forwarded-* headers.

    The port is fixed at construction, so `restart()` keeps the same URL (and the same
    PUBLIC_BASE_URL, which signatures and status callbacks depend on).
    """

    def __init__(
        self, workdir: Path, *, twilio_api: str | None = None, credentials: bool = True,
        env: Mapping[str, str | None] | None = None, db_path: Path | None = None,
        log_path: Path | None = None, port: int | None = None, name: str = "server",
    ) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_path = db_path or self.workdir / "t.db"
        self.log_path = log_path or self.workdir / f"{name}.log"
        self.name = name
        environ = {k: v for k, v in os.environ.items() if not _OURS.match(k)}
        environ.update(
            DATABASE_URL=f"sqlite:///{self.db_path}",
            FLOWS_DIR=str(FLOWS),
            PUBLIC_BASE_URL=self.url,
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            PYTHONUNBUFFERED="1",
        )
        if credentials:
            environ.update(TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN,
                           TWILIO_WHATSAPP_FROM=TWILIO_FROM)
        else:
            environ.update(TWILIO_SIGNATURE_CHECK="off")
        if twilio_api is not None:
            environ["TWILIO_API_BASE_URL"] = twilio_api
        for key, value in (env or {}).items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value
        self.env: dict[str, str] = environ
        self.public_base_url = environ.get("PUBLIC_BASE_URL", self.url)
        self.auth_token: str | None = environ.get("TWILIO_AUTH_TOKEN") or None
        self.account_sid = environ.get("TWILIO_ACCOUNT_SID") or ACCOUNT_SID
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.client = httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        """Spawn the process and wait (≤ HEALTH_TIMEOUT s) until GET /healthz is 200."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- harness: starting {self.name} on {self.url}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine", "serve", "--port", str(self.port)],
                cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.returncode = None
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + HEALTH_TIMEOUT
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                self.returncode = code
                raise RuntimeError(f"{self.name} exited with {code} during start-up; "
                                   f"log tail:\n{self.log_tail()}")
            try:
                response = self.client.get("/healthz", timeout=1.0)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.TransportError as exc:
                last = type(exc).__name__
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.name} not healthy within {HEALTH_TIMEOUT} s ({last}); "
                           f"log tail:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (a graceful stop) and wait; returns the exit status.

        If the process outlives `timeout`, it is killed and AssertionError is raised.
        """
        if self.proc is None:
            return self.returncode if self.returncode is not None else 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"{self.name} ignored SIGTERM for {timeout} s; "
                                     f"log tail:\n{self.log_tail()}") from None
        return self._reap()

    def kill(self) -> int:
        """SIGKILL (a crash: no shutdown code runs) and wait; returns the exit status."""
        if self.proc is None:
            return self.returncode if self.returncode is not None else 0
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
        return self._reap()

    def _reap(self) -> int:
        assert self.proc is not None
        self.returncode = self.proc.wait()
        self.proc = None
        return self.returncode

    def restart(self) -> Self:
        """Stop (gracefully, if still running) and start again on the same port."""
        if self.running:
            self.stop()
        elif self.proc is not None:
            self._reap()
        return self.start()

    def close(self) -> None:
        """Release everything, whatever state the process is in (for teardown)."""
        try:
            if self.running:
                self.stop()  # kills, then raises, if SIGTERM is ignored
            elif self.proc is not None:
                self._reap()
        finally:
            self.client.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the log -------------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything the process (and every restart of it) wrote so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- HTTP ----------------------------------------------------------------------------

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)

    def health(self) -> dict[str, Any]:
        response = self.get("/healthz")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def signature(self, params: Mapping[str, str], *, path: str = "/twilio/whatsapp",
                  token: str | None = None, origin: str | None = None) -> str:
        """X-Twilio-Signature as Twilio computes it, over `origin` + `path`.

        `origin` defaults to PUBLIC_BASE_URL (the URL Twilio was told to call) and
        `token` to the server's TWILIO_AUTH_TOKEN.
        """
        secret = token or self.auth_token or AUTH_TOKEN
        url = (origin or self.public_base_url) + path
        return str(RequestValidator(secret).compute_signature(url, dict(params)))

    def post_webhook(
        self, params: Mapping[str, str], *, sign: bool = True, token: str | None = None,
        signature: str | None = None, path: str = "/twilio/whatsapp",
        content_type: str = FORM, content: bytes | str | None = None,
        origin: str | None = None, headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """POST `params` form-encoded to `path`, as Twilio does.

        - `sign` adds X-Twilio-Signature, computed with `token` over `origin` + `path`
          (see `signature`); `signature` sends that exact header value instead.
        - `content_type` and `content` (a raw body that replaces the encoded params,
          still signed as `params`) are for malformed requests; `headers` adds headers
          (X-Forwarded-Proto, ...).
        """
        sent = {"Content-Type": content_type, "User-Agent": "TwilioProxy/1.1"}
        if signature is not None:
            sent["X-Twilio-Signature"] = signature
        elif sign:
            sent["X-Twilio-Signature"] = self.signature(params, path=path, token=token,
                                                        origin=origin)
        sent.update(headers or {})
        body = content if content is not None else urlencode(dict(params))
        return self.client.post(path, content=body, headers=sent)

    def inbound_form(
        self, phone: str, text: str, sid: str | None = None, *,
        profile_name: str | None = None, **extra: str | None,
    ) -> dict[str, str]:
        """The parameters of a realistic inbound WhatsApp text webhook.

        `extra` adds or overrides fields (MediaUrl0="...", NumMedia="1"); a value of
        None removes the field (From=None for a request without From).
        """
        sid = sid or message_sid()
        form = {
            "SmsMessageSid": sid, "NumMedia": "0", "MessageType": "text", "SmsSid": sid,
            "WaId": phone.lstrip("+"), "SmsStatus": "received", "Body": text,
            "To": TWILIO_FROM, "NumSegments": "1", "ReferralNumMedia": "0",
            "MessageSid": sid, "AccountSid": self.account_sid, "From": whatsapp(phone),
            "ApiVersion": "2010-04-01",
        }
        if profile_name is not None:
            form["ProfileName"] = profile_name
        for key, value in extra.items():
            if value is None:
                form.pop(key, None)
            else:
                form[key] = value
        return form

    def send(
        self, phone: str, text: str, sid: str | None = None, *,
        profile_name: str | None = None, **extra: str | None,
    ) -> httpx.Response:
        """The user at `phone` writes `text`: a signed inbound webhook (see inbound_form)."""
        return self.post_webhook(self.inbound_form(phone, text, sid,
                                                   profile_name=profile_name, **extra))

    def status_callback(
        self, sid: str, status: str, error_code: int | str | None = None, *,
        sign: bool = True, to: str = "whatsapp:+5491100000000", **extra: str | None,
    ) -> httpx.Response:
        """Twilio reports a delivery status for the outbound message `sid`."""
        form = {
            "SmsSid": sid, "SmsStatus": status, "MessageStatus": status,
            "ChannelToAddress": to.removeprefix("whatsapp:"), "To": to,
            "ChannelPrefix": "whatsapp", "MessageSid": sid, "AccountSid": self.account_sid,
            "StructuredMessage": "false", "From": TWILIO_FROM, "ApiVersion": "2010-04-01",
            "ChannelInstallSid": "XE" + "0" * 32,
        }
        if error_code is not None:
            form["ErrorCode"] = str(error_code)
        for key, value in extra.items():
            if value is None:
                form.pop(key, None)
            else:
                form[key] = value
        return self.post_webhook(form, path="/twilio/status", sign=sign)

    # -- the database --------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]

    def rows(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        """What ops read: sqlite3 on the database file, or psql on PostgreSQL (the same
        `?` placeholders; times come back as text from one and datetimes from the other)."""
        if self.database_url.startswith("sqlite"):
            return db_rows(self.db_path, sql, params)
        return pg_rows(self.database_url, sql, params)


ServerFactory = Callable[..., Server]


def check_logs(servers: list[tuple[Server, bool]]) -> list[str]:
    """Stop every server, then say what is wrong with their logs (empty if nothing).

    A "Traceback" is a problem unless its server was started with allow_traceback=True
    (the second item); the auth token in a log always is.
    """
    problems: list[str] = []
    for server, _ in servers:
        try:
            server.close()
        except AssertionError as exc:
            problems.append(str(exc))
    for server, allow_traceback in servers:
        log = server.log_text()
        if "Traceback" in log and not allow_traceback:
            problems.append(f"{server.name} logged a traceback:\n{log[-6000:]}")
        if AUTH_TOKEN in log:
            problems.append(f"{server.name} logged TWILIO_AUTH_TOKEN")
    return problems


class Servers:
    """The servers one test started in its `workdir`, all wired to one Twilio API."""

    def __init__(self, workdir: Path, twilio_api: str,
                 env: Mapping[str, str] | None = None) -> None:
        self.workdir = workdir
        self.twilio_api = twilio_api
        # Settings every server gets unless a test overrides them (DATABASE_URL, say).
        self.env = dict(env or {})
        self.made: list[tuple[Server, bool]] = []

    def start(self, *, allow_traceback: bool = False, **kwargs: Any) -> Server:
        """A started, healthy `Server(workdir, **kwargs)`.

        `allow_traceback=True` is for a test that injects a fault on purpose: it must
        then assert itself that the server recovered.
        """
        kwargs.setdefault("twilio_api", self.twilio_api)
        kwargs["env"] = {**self.env, **(kwargs.get("env") or {})}
        kwargs.setdefault("name", f"server{len(self.made) + 1}" if self.made else "server")
        server = Server(self.workdir, **kwargs)
        self.made.append((server, allow_traceback))
        return server.start()

    def close(self) -> list[str]:
        """Stop them all; what is wrong with their logs (see check_logs)."""
        return check_logs(self.made)
