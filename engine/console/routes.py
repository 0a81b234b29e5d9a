"""The console's ASGI app, mounted at /console by the server (engine/server/app.py)."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from engine.console.access import Access
from engine.console.guard import Endpoint, guarded, security_headers
from engine.console.ops import Ops
from engine.console.simulator import Simulator
from engine.console.stream import Hub
from engine.console.views import HERE, Pages
from engine.server.worker import Worker

__all__ = ["PREFIX", "console_app"]

log = logging.getLogger("tertulia.console")

PREFIX = "/console"
SESSION_HOURS = 12
_OFF = """<!doctype html><meta charset="utf-8"><title>tertulia console: off</title>
<link rel="icon" href="data:,">
<h1>The web console is off</h1>
<p>Set <code>ADMIN_TOKEN</code> (16 characters or more) and restart <code>tertulia serve</code>;
then open <code>/console</code> and log in with it. For a laptop only,
<code>CONSOLE_LOCAL=1</code> opens it to this machine without a token.</p>"""


def console_app(worker: Worker) -> tuple[Starlette, Hub]:
    """The console (or, without ADMIN_TOKEN and CONSOLE_LOCAL, a 404 saying how to turn it
    on), and the hub that ends its event streams on shutdown."""
    settings = worker.settings
    token = settings.admin_token.reveal() if settings.admin_token is not None else None
    access = Access(token, local=settings.console_local,
                    public_base_url=settings.public_base_url)
    hub = Hub()
    if not access.enabled:
        log.info("web console off: set ADMIN_TOKEN to serve it at %s", PREFIX)
        every = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(routes=[Route("/{rest:path}", _off, methods=every)]), hub
    _announce(access, settings.public_base_url)
    worker.conversations.subscribe(hub.on_commit)
    middleware = [Middleware(
        SessionMiddleware, secret_key=access.session_key, session_cookie="tertulia_console",
        max_age=SESSION_HOURS * 3600, path=PREFIX, same_site="strict",
        https_only=_https(settings.public_base_url),
    )]
    return Starlette(routes=_routes(worker, access, hub), middleware=middleware), hub


def _announce(access: Access, public_base_url: str | None) -> None:
    if access.local:
        log.warning("!!! WEB CONSOLE WITHOUT A TOKEN: CONSOLE_LOCAL=1 opens %s to anyone on "
                    "this machine, with no login. Set ADMIN_TOKEN before exposing it. !!!",
                    PREFIX)
    else:
        log.info("web console at %s (ADMIN_TOKEN set)", PREFIX)
    host = urlsplit(public_base_url or "").hostname or ""
    if public_base_url is not None and not _https(public_base_url) \
            and host not in ("localhost", "127.0.0.1", "::1"):
        log.warning("console logins travel in clear text: PUBLIC_BASE_URL is not https")


def _https(url: str | None) -> bool:
    return url is not None and urlsplit(url).scheme == "https"


def _routes(worker: Worker, access: Access, hub: Hub) -> list[BaseRoute]:
    pages = Pages(access)
    sim = Simulator(worker, pages, hub)
    ops = Ops(worker, pages)

    def page(endpoint: Endpoint, change: bool = False) -> Endpoint:
        return guarded(access, endpoint, change=change)

    def api(endpoint: Endpoint, change: bool = False) -> Endpoint:
        return guarded(access, endpoint, api=True, change=change)

    async def home(request: Request) -> Response:
        return RedirectResponse(f"{request.scope.get('root_path', '')}/simulator",
                                status_code=303)

    login = _Login(access, pages)
    session = "/ops/sessions/{session_id:int}"
    return [
        Route("/", page(home)),
        Route("/login", login.form, methods=["GET"]),
        Route("/login", login.submit, methods=["POST"]),
        Route("/logout", page(login.leave, change=True), methods=["POST"]),
        Route("/simulator", page(sim.page)),
        Route("/ops", page(ops.page)),
        Route("/ops/table", page(ops.table)),
        Route(session, page(ops.session_page)),
        Route(session + "/close", page(ops.close_form, change=True), methods=["POST"]),
        Route(session + "/reveal", page(ops.reveal, change=True), methods=["POST"]),
        Route("/api/sim/messages", api(sim.send, change=True), methods=["POST"]),
        Route("/api/sim/reset", api(sim.reset, change=True), methods=["POST"]),
        Route("/api/sim/stream", api(sim.stream)),
        Route("/api/sessions", api(ops.api_sessions)),
        Route("/api/sessions/{session_id:int}", api(ops.api_session)),
        Route("/api/sessions/{session_id:int}/close", api(ops.api_close, change=True),
              methods=["POST"]),
        Route("/api/sessions/{session_id:int}/reveal", api(ops.api_reveal, change=True),
              methods=["POST"]),
        Route("/api/outbox", api(ops.api_outbox)),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]


class _Login:
    """The login form: the admin token in, a signed session cookie out."""

    def __init__(self, access: Access, pages: Pages) -> None:
        self._access = access
        self._pages = pages

    async def form(self, request: Request) -> Response:
        if self._access.who(request) is not None:
            return RedirectResponse(self._next(request, request.query_params.get("next")),
                                    status_code=303)
        return security_headers(self._pages.render(
            request, "login.html", next=request.query_params.get("next", ""), failed=False))

    async def submit(self, request: Request) -> Response:
        form = await request.form()
        target = str(form.get("next", ""))
        if not self._access.same_origin(request):
            return security_headers(HTMLResponse("refused: cross-site login", status_code=403))
        if not self._access.log_in(request, str(form.get("token", ""))):
            return security_headers(self._pages.render(
                request, "login.html", status=403, next=target, failed=True))
        return RedirectResponse(self._next(request, target), status_code=303)

    async def leave(self, request: Request) -> Response:
        request.session.clear()
        return RedirectResponse(self._next(request, "login"), status_code=303)

    @staticmethod
    def _next(request: Request, target: str | None) -> str:
        """Only a path inside the console: never another site."""
        root = str(request.scope.get("root_path", "")).rstrip("/")
        if target == "login":
            return f"{root}/login"
        if target and target.startswith(root + "/") and not target.startswith("//") \
                and "\\" not in target:
            return target
        return f"{root}/simulator"


async def _off(_request: Request) -> Response:
    return HTMLResponse(_OFF, status_code=404)
