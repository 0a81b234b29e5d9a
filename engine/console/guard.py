"""Wrapping every console endpoint in the access checks, so none can forget them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from engine.console.access import Access

__all__ = ["Endpoint", "guarded", "security_headers"]

Endpoint = Callable[[Request], Awaitable[Response]]

# Every script and style comes from /console/static; Mermaid writes inline styles into
# its SVG, hence 'unsafe-inline' for styles only.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'; object-src 'none'")


def security_headers(response: Response) -> Response:
    response.headers.setdefault("content-security-policy", _CSP)
    response.headers.setdefault("x-frame-options", "DENY")
    response.headers.setdefault("x-content-type-options", "nosniff")
    response.headers.setdefault("referrer-policy", "same-origin")
    response.headers.setdefault("cache-control", "no-store")
    return response


def guarded(access: Access, endpoint: Endpoint, *, api: bool = False,
            change: bool = False) -> Endpoint:
    """`endpoint` behind the lock: refused (401/403 or the login page) unless the caller
    is known, and for `change`, unless the origin and CSRF checks pass."""

    async def checked(request: Request) -> Response:
        who = access.who(request)
        if who is None:
            return security_headers(_refuse(access, request, api=api))
        if change:
            submitted = None
            if request.headers.get("content-type", "").startswith(_FORMS):
                submitted = str((await request.form()).get("csrf", ""))
            if not access.may_change(request, who, submitted):
                return security_headers(PlainTextResponse(
                    "refused: cross-site request or missing CSRF token (reload the page)",
                    status_code=403))
        request.state.who = who
        return security_headers(await endpoint(request))

    return checked


_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


def _refuse(access: Access, request: Request, *, api: bool) -> Response:
    if access.local:
        return PlainTextResponse("the console is open to loopback clients only "
                                 "(CONSOLE_LOCAL); set ADMIN_TOKEN to use it from elsewhere",
                                 status_code=403)
    if api:
        return JSONResponse({"error": "unauthorized: send Authorization: Bearer <ADMIN_TOKEN>"},
                            status_code=401, headers={"www-authenticate": "Bearer"})
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{_root(request)}/login?next={quote(target)}", status_code=303)


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")
