"""The simulator: a WhatsApp-like page on channel `web`, with the real engine behind it.

Nothing is simulated but the phone: messages go through the process's writer like a
webhook's, replies and notices come back through the outbox, and timeouts are the
real scheduler's.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from engine.channels.web import CHANNEL, WebPhone, inbound
from engine.console.stream import Hub, events, session_json
from engine.console.views import Diagrams, Pages
from engine.core.errors import StoreError
from engine.core.ports import SessionRecord
from engine.core.text import is_e164
from engine.server.worker import Worker
from persistence.feed import Cursor
from persistence.queries import latest_session

__all__ = ["DEFAULT_PHONE", "Simulator"]

DEFAULT_PHONE = "+5491100000001"
MAX_TEXT = 4096


class Simulator:
    """The simulator's page and its three calls: send, reset and the event stream."""

    def __init__(self, worker: Worker, pages: Pages, hub: Hub) -> None:
        self._worker = worker
        self._pages = pages
        self._hub = hub
        self._diagrams = Diagrams(worker.conversations.flows)

    async def page(self, request: Request) -> Response:
        flows = self._worker.conversations.flows
        phone = request.query_params.get("phone", DEFAULT_PHONE).strip()
        flow = request.query_params.get("flow", flows.default_name)
        problems = []
        if not is_e164(phone):
            problems.append(f"{phone!r} is not an E.164 number such as {DEFAULT_PHONE}")
            phone = DEFAULT_PHONE
        if flow not in flows.flows:
            problems.append(f"flow {flow!r} is not loaded")
            flow = flows.default_name
        return self._pages.render(
            request, "simulator.html", status=400 if problems else 200, page="simulator",
            phone=phone,
            flow=flow, flows=sorted(flows.flows), name=request.query_params.get("name", ""),
            problems=problems, diagram=self._diagrams.source(flow),
        )

    async def send(self, request: Request) -> Response:
        body = await _json(request)
        if isinstance(body, Response):
            return body
        wrong = [key for key in ("phone", "text", "flow", "name")
                 if not isinstance(body.get(key, ""), str | None)]
        if wrong:
            return JSONResponse({"error": f"{wrong[0]} must be a string"}, status_code=400)
        phone = body.get("phone") or ""
        text = (body.get("text") or "").strip()
        flow = body.get("flow") or None
        name = (body.get("name") or "").strip()[:64] or None
        problem = self._problem(phone, text, flow)
        if problem:
            return JSONResponse({"error": problem}, status_code=400)
        message = inbound(phone, text, flow=flow, profile_name=name)
        try:
            await self._worker.writer.submit(message)
        except StoreError as exc:
            return JSONResponse({"error": f"not stored: {exc}"}, status_code=503)
        return JSONResponse({"ok": True})

    def _problem(self, phone: str, text: str, flow: str | None) -> str | None:
        if not is_e164(phone):
            return f"phone {phone!r} is not an E.164 number such as {DEFAULT_PHONE}"
        if not text:
            return "text is empty"
        if len(text) > MAX_TEXT:
            return f"text is {len(text)} characters; at most {MAX_TEXT}"
        if flow is not None and flow not in self._worker.conversations.flows.flows:
            known = ", ".join(sorted(self._worker.conversations.flows.flows))
            return f"flow {flow!r} is not loaded; known flows: {known}"
        return None

    async def reset(self, request: Request) -> Response:
        """Close the phone's open session without a notice: the next message starts over."""
        body = await _json(request)
        if isinstance(body, Response):
            return body
        phone = str(body.get("phone", ""))
        if not is_e164(phone):
            return JSONResponse({"error": f"phone {phone!r} is not an E.164 number"},
                                status_code=400)
        session = await run_in_threadpool(self._reset, phone)
        return JSONResponse({"ok": True, "session": session_json(session)})

    def _reset(self, phone: str) -> SessionRecord | None:
        store = self._worker.store
        session = latest_session(store, CHANNEL, phone)
        if session is not None and session.is_open:
            self._worker.conversations.close(session.id, notify=False)
        return latest_session(store, CHANNEL, phone)

    async def stream(self, request: Request) -> Response:
        phone = request.query_params.get("phone", "")
        if not is_e164(phone):
            return JSONResponse({"error": f"phone {phone!r} is not an E.164 number"},
                                status_code=400)
        resume = request.headers.get("last-event-id") or request.query_params.get("after", "")
        cursor = Cursor.parse(resume) if resume else None
        w = self._worker
        web_phone = WebPhone(w.store, w.writer.write, w.wiring.clock, phone)
        return StreamingResponse(events(self._hub, web_phone, cursor),
                                 media_type="text/event-stream",
                                 headers={"x-accel-buffering": "no"})


async def _json(request: Request) -> dict[str, Any] | Response:
    raw = await request.body()
    if len(raw) > 4 * MAX_TEXT + 1024:
        return JSONResponse({"error": "body too large"}, status_code=413)
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return JSONResponse({"error": "expected a JSON object"}, status_code=400)
    if not isinstance(body, dict):
        return JSONResponse({"error": "expected a JSON object"}, status_code=400)
    return body
