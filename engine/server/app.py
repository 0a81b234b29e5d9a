"""The ASGI app: Twilio's webhooks, /healthz and /metrics.

A webhook is answered only after its message is committed (so a 200 means it is
durable), with empty TwiML: replies travel through the outbox, never in the response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from engine import console
from engine.channels.twilio import (
    Form,
    TrustedProxies,
    check_account,
    parse_form,
    parse_inbound,
    parse_status,
    signed_url,
    valid_signature,
)
from engine.core.errors import StoreError, WebhookError
from engine.core.text import digits
from engine.server.worker import Worker
from persistence import outbox

__all__ = ["FORWARDED", "create_app", "worker_app"]

log = logging.getLogger("tertulia.web")
# The scope key that says whether this request came through a proxy we trust.
FORWARDED = "tertulia.forwarded"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
_FORM = "application/x-www-form-urlencoded"


def _twiml(status: int = 200) -> Response:
    return Response(EMPTY_TWIML, status_code=status, media_type="text/xml")


class _Webhooks:
    """The two Twilio endpoints and what they share: reading and checking a request."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        settings = worker.settings
        token = settings.twilio_auth_token
        self._token = token.reveal() if token is not None else None
        self._check = settings.twilio_signature_check
        self._account = settings.twilio_account_sid
        self._public = settings.public_base_url
        self._max_bytes = settings.max_form_bytes
        self.accepting = True
        self.in_flight = 0
        self._observe = {name: worker.metrics.webhook.labels(name).observe
                         for name in ("whatsapp", "status")}

    async def read(self, request: Request) -> Form | Response:
        """The checked form, or the response that refuses it."""
        if not self.accepting:
            return PlainTextResponse("shutting down", status_code=503)
        length = request.headers.get("content-length", "")
        # Refused before a byte of the body is read, let alone parsed or hashed.
        if length and (not digits(length) or int(length) > self._max_bytes):
            return _refuse(request, 413 if digits(length) else 400,
                           f"body of {length[:20]} bytes (MAX_FORM_BYTES is {self._max_bytes})")
        try:
            body = await _read_capped(request, self._max_bytes)
        except ClientDisconnect:
            # An aborted upload: one line, no traceback (nobody is there to answer).
            return _refuse(request, 400, "client disconnected before the body ended")
        if body is None:
            return _refuse(request, 413, f"body over MAX_FORM_BYTES ({self._max_bytes})")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != _FORM:
            return PlainTextResponse(f"expected {_FORM}", status_code=400)
        try:
            form = parse_form(body)
            if self._check and not self._signed(request, form):
                return PlainTextResponse("invalid signature", status_code=403)
            check_account(form, self._account)
        except WebhookError as exc:
            return _refuse(request, 400, str(exc))
        return form

    def _signed(self, request: Request, form: Form) -> bool:
        if self._token is None:
            log.warning("webhook refused: no TWILIO_AUTH_TOKEN to check its signature "
                        "(TWILIO_SIGNATURE_CHECK=off is for local use only)")
            return False
        scope = request.scope
        query = scope["query_string"].decode("latin-1")
        path_qs = scope["path"] + (f"?{query}" if query else "")
        url = signed_url(scope["scheme"], path_qs, request.headers, self._public,
                         forwarded=bool(scope.get(FORWARDED)))
        signature = request.headers.get("x-twilio-signature", "")
        if valid_signature(self._token, url, form, signature):
            return True
        reason = "missing" if not signature else "does not match"
        log.warning("webhook refused: X-Twilio-Signature %s for URL %s (set PUBLIC_BASE_URL "
                    "to the origin Twilio calls)", reason, url[:200])
        return False

    async def whatsapp(self, request: Request) -> Response:
        return await self._timed("whatsapp", self._whatsapp, request)

    async def _whatsapp(self, request: Request) -> Response:
        form = await self.read(request)
        if isinstance(form, Response):
            return form
        try:
            inbound = parse_inbound(form)
        except WebhookError as exc:
            return _refuse(request, 400, str(exc))
        try:
            await self.worker.writer.submit(inbound)
        except StoreError as exc:
            # 5xx tells Twilio to log it and try the fallback URL; nothing was committed.
            log.error("webhook not stored: %s", exc)
            return PlainTextResponse("storage unavailable", status_code=503)
        return _twiml()

    async def status(self, request: Request) -> Response:
        return await self._timed("status", self._status, request)

    async def _status(self, request: Request) -> Response:
        form = await self.read(request)
        if isinstance(form, Response):
            return form
        try:
            update = parse_status(form)
            result = await run_in_threadpool(
                self.worker.writer.write,
                lambda tx: outbox.apply_status(tx, update.sid, update.status, update.error_code,
                                               self.worker.clock.now()),
            )
        except WebhookError as exc:
            return _refuse(request, 400, str(exc))
        except StoreError as exc:
            log.error("status callback not stored: %s", exc)
            return PlainTextResponse("storage unavailable", status_code=503)
        if result is None:
            log.info("status callback for unknown message %s (%s)", update.sid, update.status)
        return _twiml()

    async def _timed(
        self, name: str, handler: Callable[[Request], Awaitable[Response]], request: Request
    ) -> Response:
        started = time.perf_counter()
        self.in_flight += 1
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1
            self._observe[name](time.perf_counter() - started)


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it passes `limit` bytes (a chunked upload has no
    Content-Length to refuse it by)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse(request: Request, status: int, reason: str) -> Response:
    """A 4xx for a request we will not read, logged in one line without a traceback."""
    client = request.client.host if request.client else "?"
    log.warning("webhook refused (%d) from %s: %s", status, client, reason[:200])
    return PlainTextResponse(reason, status_code=status)


async def _disconnected(request: Request, _exc: Exception) -> Response:
    """A client gone mid-body on any route (the console's too): one line, no traceback."""
    client = request.client.host if request.client else "?"
    log.warning("%s %s from %s: client disconnected before the body ended",
                request.method, request.url.path[:100], client)
    return PlainTextResponse("client disconnected", status_code=400)


class ForwardedTrust:
    """X-Forwarded-* count only from FORWARDED_ALLOW_IPS, the way uvicorn treats them.

    Marks the scope with whether the peer is trusted (for X-Forwarded-Host and -Port,
    which the signed URL uses), then lets uvicorn's middleware set the client and the
    scheme from X-Forwarded-For and -Proto. `serve` turns uvicorn's own copy off, so
    the peer seen here is the socket's.
    """

    def __init__(self, app: ASGIApp, allow: str) -> None:
        self._trusted = TrustedProxies(allow)
        self._proxied = ProxyHeadersMiddleware(app, trusted_hosts=allow)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            scope[FORWARDED] = client is not None and client[0] in self._trusted
        await self._proxied(scope, receive, send)  # type: ignore[arg-type]


def worker_app() -> Starlette:
    """The app of one `serve --workers N` child: settings from the environment."""
    import gc

    from engine.monitoring import logs
    from engine.settings import load_settings

    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    app = create_app(Worker(settings, stats=True))
    gc.freeze()
    return app


def create_app(worker: Worker, *, manage_worker: bool = True) -> Starlette:
    """The app; with `manage_worker`, its lifespan starts and stops the worker."""
    hooks = _Webhooks(worker)

    async def healthz(_request: Request) -> Response:
        return await run_in_threadpool(_health, worker)

    async def metrics(_request: Request) -> Response:
        payload = await run_in_threadpool(generate_latest, worker.metrics.registry)
        return Response(payload, media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if manage_worker:
            await run_in_threadpool(worker.start)
        try:
            yield
        finally:
            hooks.accepting = False
            await _drain(hooks)
            if manage_worker:
                await run_in_threadpool(worker.stop)

    app = Starlette(
        routes=[
            Route("/twilio/whatsapp", hooks.whatsapp, methods=["POST"]),
            Route("/twilio/status", hooks.status, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        middleware=[Middleware(ForwardedTrust, allow=worker.settings.forwarded_allow_ips)],
        exception_handlers={ClientDisconnect: _disconnected},
        lifespan=lifespan,
    )
    console.mount(app, worker)  # /console, the web console (engine/console/)
    return app


async def _drain(hooks: _Webhooks, seconds: float = 10.0) -> None:
    """Let webhooks already inside finish before the engine goes away."""
    deadline = time.monotonic() + seconds
    while hooks.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def _health(worker: Worker) -> Response:
    """Liveness and readiness, and this worker's true role (DESIGN.md, Scale-out)."""
    role = worker.health()
    body: dict[str, Any] = {"status": "ok", **role, "dry_run": worker.settings.dry_run}
    if not role["ok"]:
        body["status"] = "unhealthy"
        return JSONResponse(body, status_code=503)
    problem = worker.storage.problem()
    if problem is not None:
        body.update(status="unavailable", database=problem)
        return JSONResponse(body, status_code=503)
    try:
        with worker.store.reading() as conn:
            conn.execute(text("SELECT 1"))
        body["database"] = "ok"
        body["dispatcher"] = {"running": worker.dispatcher.running,
                              "pending": outbox.pending_count(worker.store)}
    except Exception as exc:
        body.update(status="unavailable", database=f"error: {type(exc).__name__}")
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)
