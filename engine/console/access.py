"""Who may use the console, and which requests may change something.

- With ADMIN_TOKEN: API calls send `Authorization: Bearer <token>`; a browser logs in
  once with the token and gets a signed, HttpOnly, SameSite=Strict session cookie.
- Without it, CONSOLE_LOCAL=1 opens the console to loopback clients only (client
  address and Host header both loopback), with no login.
- A request that changes state must come from our own origin (the Origin header, when
  sent) and, unless it carries the bearer token, carry the session's CSRF token (a form
  field or the X-CSRF-Token header). A cookie alone never changes anything.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

__all__ = ["CSRF_HEADER", "Access", "Who"]

log = logging.getLogger("tertulia.console")

CSRF_HEADER = "x-csrf-token"
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True, slots=True)
class Who:
    """An authenticated caller, as the log names them."""

    how: str  # bearer | login | local
    label: str

    def __str__(self) -> str:
        return self.label


class Access:
    """The console's lock: token (or loopback) checks, login sessions, CSRF, origin."""

    def __init__(self, token: str | None, *, local: bool, public_base_url: str | None) -> None:
        self._token = token
        self.local = token is None and local
        self._public_origin = _origin(public_base_url) if public_base_url else None
        # Cookies are signed with a key derived from the token: changing the token logs
        # everyone out. Local mode has no token, so its sessions last one process.
        seed = token if token is not None else secrets.token_hex(32)
        self.session_key = hmac.new(seed.encode(), b"tertulia console session",
                                    hashlib.sha256).hexdigest()

    @property
    def enabled(self) -> bool:
        return self._token is not None or self.local

    # -- who is calling --------------------------------------------------------------------

    def who(self, request: Request) -> Who | None:
        """The caller, or None when the request proves nothing."""
        if self.local:
            return self._local(request)
        bearer = _bearer(request)
        if bearer is not None:
            return Who("bearer", "bearer token") if self._matches(bearer) else None
        sid = request.session.get("sid")
        if isinstance(sid, str) and isinstance(request.session.get("csrf"), str):
            return Who("login", f"login {sid}")
        return None

    def _local(self, request: Request) -> Who | None:
        client = request.client.host if request.client else ""
        if not (_is_loopback(client) and _is_loopback(_host_name(request))):
            return None
        if "csrf" not in request.session:
            request.session.update(sid="local", csrf=secrets.token_urlsafe(32))
        return Who("local", f"local {client}")

    def _matches(self, candidate: str) -> bool:
        return self._token is not None and hmac.compare_digest(candidate.encode(),
                                                               self._token.encode())

    # -- logging in --------------------------------------------------------------------------

    def log_in(self, request: Request, token: str) -> bool:
        """Start a browser session if `token` is the admin token."""
        client = request.client.host if request.client else "?"
        if not self._matches(token):
            log.warning("console: failed login from %s", client)
            return False
        request.session.clear()
        request.session.update(sid=secrets.token_hex(4), csrf=secrets.token_urlsafe(32))
        log.info("console: login %s from %s", request.session["sid"], client)
        return True

    @staticmethod
    def csrf(request: Request) -> str:
        value = request.session.get("csrf", "")
        return value if isinstance(value, str) else ""

    # -- requests that change state ----------------------------------------------------------

    def same_origin(self, request: Request) -> bool:
        """The Origin header, when a browser sends one, names this server."""
        origin = request.headers.get("origin")
        if origin is None:
            return True
        allowed = {f"{request.url.scheme}://{request.headers.get('host', '')}".lower()}
        if self._public_origin is not None:
            allowed.add(self._public_origin)
        return origin.lower() in allowed

    def may_change(self, request: Request, who: Who, submitted: str | None) -> bool:
        """Whether a state-changing request passes the origin and CSRF checks."""
        if not self.same_origin(request):
            return False
        if who.how == "bearer":
            return True  # no ambient credential: a cross-site page cannot send the header
        expected = self.csrf(request)
        given = request.headers.get(CSRF_HEADER) or submitted or ""
        return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _host_name(request: Request) -> str:
    host = request.headers.get("host", "")
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
