"""The ops page: open conversations, one conversation's transcript, closing it, the
outbox's statuses, the counts of /metrics and the flow's diagram.

Phones are masked everywhere; the full number appears only on an explicit POST, which
is logged at WARNING with who asked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from engine.console.views import Diagrams, Pages, counts, error_text, session_row
from engine.core.ports import SessionRecord
from engine.server.worker import Worker
from persistence import ops

__all__ = ["OUTBOX_FILTERS", "Filters", "Ops"]

log = logging.getLogger("tertulia.console")

# Which outbound rows the outbox panel lists.
OUTBOX_FILTERS: dict[str, tuple[str, ...]] = {
    "all": (),
    "pending": ("pending", "sending"),
    "failed": ("failed", "undelivered", "skipped_window"),
    "delivered": ("sent", "delivered", "read"),
}
_MAX_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Filters:
    """What the ops page lists: its query string, read leniently (unknown = nothing)."""

    state: str | None
    flow: str | None
    reason: str | None
    closed: bool
    outbox: str

    @classmethod
    def of(cls, request: Request) -> Filters:
        q = request.query_params
        outbox = q.get("outbox", "all")
        return cls(state=q.get("state", "")[:64] or None, flow=q.get("flow", "")[:64] or None,
                   reason=q.get("reason", "")[:64] or None, closed=q.get("closed") == "1",
                   outbox=outbox if outbox in OUTBOX_FILTERS else "all")


class Ops:
    """The ops endpoints, as pages (forms and htmx) and as a JSON API."""

    def __init__(self, worker: Worker, pages: Pages) -> None:
        self._worker = worker
        self._pages = pages
        self._diagrams = Diagrams(worker.conversations.flows)

    # -- reading -------------------------------------------------------------------------

    def _sessions(self, filters: Filters) -> list[dict[str, Any]]:
        found = ops.list_sessions(
            self._worker.store, include_closed=filters.closed, state=filters.state,
            flow=filters.flow, close_reason=filters.reason,
        )
        now = self._worker.wiring.clock.now()
        return [session_row(s, now) for s in found]

    def _outbound(self, which: str) -> list[ops.OutMessage]:
        return ops.outbound(self._worker.store, statuses=OUTBOX_FILTERS[which])

    def _states(self) -> list[str]:
        return sorted({s for flow in self._worker.conversations.flows for s in flow.states})

    # -- pages ---------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        filters = Filters.of(request)
        flows = self._worker.conversations.flows
        sessions = await run_in_threadpool(self._sessions, filters)
        outbound = await run_in_threadpool(self._outbound, filters.outbox)
        shown_flow = filters.flow if filters.flow in flows.flows else flows.default_name
        return self._pages.render(
            request, "ops.html", page="ops", filters=filters, sessions=sessions, outbound=outbound,
            counts=counts(self._worker.metrics.registry), flows=sorted(flows.flows),
            states=self._states(), reasons=flows.close_reasons(),
            outbox_filters=list(OUTBOX_FILTERS), diagram_flow=shown_flow,
            diagram=self._diagrams.source(shown_flow), query=request.url.query,
        )

    async def table(self, request: Request) -> Response:
        """The sessions table alone, for the page's periodic refresh."""
        sessions = await run_in_threadpool(self._sessions, Filters.of(request))
        return self._pages.render(request, "_sessions.html", sessions=sessions)

    async def session_page(self, request: Request) -> Response:
        found = await run_in_threadpool(self._transcript, request)
        if found is None:
            return self._pages.render(request, "missing.html", status=404,
                                      what=f"session {request.path_params['session_id']}")
        now = self._worker.wiring.clock.now()
        s = found.session
        return self._pages.render(
            request, "session.html", page="ops", s=session_row(s, now), messages=found.messages,
            events=found.events, why=error_text, diagram=self._diagrams.source(s.flow, s.state),
        )

    def _transcript(self, request: Request) -> ops.Transcript | None:
        session_id = int(request.path_params["session_id"])
        if session_id > _MAX_ID:
            return None
        return ops.transcript(self._worker.store, session_id)

    # -- acting --------------------------------------------------------------------------

    async def close_form(self, request: Request) -> Response:
        form = await request.form()
        notify = form.get("notify") == "1"
        found = await run_in_threadpool(self._close, request, notify)
        if found is None:
            return self._pages.render(request, "missing.html", status=404,
                                      what=f"session {request.path_params['session_id']}")
        base = str(request.scope.get("root_path", "")).rstrip("/")
        return RedirectResponse(f"{base}/ops/sessions/{found.id}", status_code=303)

    def _close(self, request: Request, notify: bool) -> SessionRecord | None:
        found = self._transcript(request)
        if found is None:
            return None
        if not found.session.is_open:
            return found.session
        self._worker.conversations.close(found.session.id, notify=notify)
        log.info("console: session %s closed by %s (%s)", found.session.id,
                 request.state.who, "notice queued" if notify else "no notice")
        after = self._transcript(request)
        return after.session if after is not None else found.session

    async def reveal(self, request: Request) -> Response:
        """The full phone of one session, in place of the masked one (htmx)."""
        session = await run_in_threadpool(self._reveal, request)
        if session is None:
            return HTMLResponse("no such session", status_code=404)
        return self._pages.render(request, "_phone.html", phone=session.phone)

    def _reveal(self, request: Request) -> SessionRecord | None:
        found = self._transcript(request)
        if found is None:
            return None
        client = request.client.host if request.client else "?"
        log.warning("console: full phone of session %s revealed to %s from %s",
                    found.session.id, request.state.who, client)
        return found.session

    # -- the JSON API --------------------------------------------------------------------

    async def api_sessions(self, request: Request) -> Response:
        sessions = await run_in_threadpool(self._sessions, Filters.of(request))
        return JSONResponse({"sessions": sessions})

    async def api_session(self, request: Request) -> Response:
        found = await run_in_threadpool(self._transcript, request)
        if found is None:
            return JSONResponse({"error": "no such session"}, status_code=404)
        now = self._worker.wiring.clock.now()
        return JSONResponse({
            "session": session_row(found.session, now),
            "messages": [_message_json(m) for m in found.messages],
            "events": [{k: _plain(v) for k, v in e.items()} for e in found.events],
        })

    async def api_close(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        notify = not (isinstance(body, dict) and body.get("notify") is False)
        closed = await run_in_threadpool(self._close, request, notify)
        if closed is None:
            return JSONResponse({"error": "no such session"}, status_code=404)
        now = self._worker.wiring.clock.now()
        return JSONResponse({"session": session_row(closed, now)})

    async def api_reveal(self, request: Request) -> Response:
        session = await run_in_threadpool(self._reveal, request)
        if session is None:
            return JSONResponse({"error": "no such session"}, status_code=404)
        return JSONResponse({"id": session.id, "phone": session.phone})

    async def api_outbox(self, request: Request) -> Response:
        which = request.query_params.get("status", "all")
        if which not in OUTBOX_FILTERS:
            return JSONResponse({"error": f"status {which!r}: one of "
                                 + ", ".join(OUTBOX_FILTERS)}, status_code=400)
        rows = await run_in_threadpool(self._outbound, which)
        return JSONResponse({"messages": [{
            "id": r.id, "session": r.session_id, "channel": r.channel,
            "status": r.status, "error_code": r.error_code,
            "error": error_text(r.status, r.error_code) or None, "attempts": r.attempts,
            "created_at": r.created_at.isoformat(), "body": r.body,
        } for r in rows]})


def _message_json(row: dict[str, Any]) -> dict[str, Any]:
    shown = {k: _plain(v) for k, v in row.items() if k not in ("body", "body_redacted")}
    shown["body"] = row["body_redacted"] or row["body"]  # never a pending password
    shown["error"] = error_text(row["status"], row["error_code"]) or None
    return shown


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value
