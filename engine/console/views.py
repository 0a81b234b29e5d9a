"""Rendering: the templates, and the small facts pages show (masked phones, time left,
what a Twilio error code means, the counts /metrics serves)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from engine.console.access import Access
from engine.core.diagram import mermaid
from engine.core.ports import SessionRecord
from engine.core.registry import FlowRegistry
from engine.monitoring.logs import mask_phone

__all__ = ["HERE", "Count", "Diagrams", "Pages", "counts", "error_text", "session_row"]

HERE = Path(__file__).resolve().parent

# The codes an operator meets most; every code links to Twilio's page about it.
_TWILIO_ERRORS = {
    20429: "too many requests to Twilio's API",
    21211: "the 'To' number is not a valid phone number",
    21408: "sending to this region is not enabled on the account",
    21610: "the recipient replied STOP: unsubscribed",
    21614: "the 'To' number is not a mobile number",
    30003: "unreachable destination handset",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
    30007: "filtered by the carrier",
    30008: "unknown error from the carrier",
    63003: "the WhatsApp channel could not find the 'To' address",
    63007: "no WhatsApp channel for the 'From' address",
    63016: "outside the 24-hour window: only a template may be sent",
    63018: "rate limit exceeded for the WhatsApp sender",
}
_STATUSES = {
    "skipped_window": "not sent: the user's last message is older than 24 hours",
    "dry_run": "not sent: dry run (no Twilio credentials), written to the log",
}


def error_text(status: str, code: int | None) -> str:
    """Why a message did not (or may not) reach the user, in a few words."""
    if code is not None:
        if 400 <= code < 600:
            return f"HTTP {code} from Twilio"
        return _TWILIO_ERRORS.get(code, "see Twilio's page for this code")
    return _STATUSES.get(status, "")


def session_row(session: SessionRecord, now: datetime) -> dict[str, Any]:
    """What a listing shows of a session: the phone masked, time left in seconds."""
    left = (session.expires_at - now).total_seconds() if session.is_open else None
    return {
        "id": session.id, "channel": session.channel, "phone": mask_phone(session.phone),
        "flow": session.flow, "state": session.state, "open": session.is_open,
        "started_at": session.started_at.isoformat(),
        "age_seconds": int((now - session.started_at).total_seconds()),
        "expires_at": session.expires_at.isoformat(),
        "seconds_left": max(0, int(left)) if left is not None else None,
        "close_reason": session.close_reason,
        "closed_at": session.closed_at.isoformat() if session.closed_at else None,
    }


@dataclass(frozen=True, slots=True)
class Count:
    """One sample of /metrics: `tertulia_sessions_open{flow="trial",state="greeting"} 2`."""

    name: str
    help: str
    labels: str
    value: float

    @property
    def short(self) -> str:
        return self.name.removeprefix("tertulia_").replace("_", " ")


def counts(registry: CollectorRegistry) -> list[Count]:
    """The counts /metrics serves: its samples minus histogram buckets, sums of seconds
    and creation times."""
    found = []
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith(("_bucket", "_sum", "_created")):
                continue
            labels = ", ".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found.append(Count(sample.name, family.documentation, labels, sample.value))
    return found


class Diagrams:
    """The Mermaid source of each loaded flow, drawn once (GraphMachine is not cheap)."""

    def __init__(self, flows: FlowRegistry) -> None:
        self._flows = flows
        self._drawn: dict[str, str] = {}

    def source(self, name: str, current: str | None = None) -> str:
        """The diagram of flow `name` ("" if not loaded), with `current` in green."""
        if name not in self._flows.flows:
            return ""
        if name not in self._drawn:
            self._drawn[name] = mermaid(self._flows.get(name))
        if current is None or current not in self._flows.get(name).states:
            return self._drawn[name]
        return self._drawn[name] + HIGHLIGHT.format(state=current)


HIGHLIGHT = ("  classDef current fill:#25d366,stroke:#075e54,color:#fff\n"
             "  class {state} current\n")


class Pages:
    """The Jinja2 templates, with what every page needs (CSRF token, mode, base URL)."""

    def __init__(self, access: Access) -> None:
        self._access = access
        self._templates = Jinja2Templates(directory=HERE / "templates")
        env = self._templates.env
        env.filters["masked"] = mask_phone
        env.filters["clock"] = lambda moment: moment.strftime("%H:%M:%S") if moment else ""
        env.filters["why"] = lambda row: error_text(row.status, row.error_code)

    def render(self, request: Request, template: str, status: int = 200,
               **context: Any) -> Response:
        base = str(request.scope.get("root_path", "")).rstrip("/")
        context.update(base=base, csrf=self._access.csrf(request), local=self._access.local,
                       who=getattr(request.state, "who", None))
        return self._templates.TemplateResponse(request, template, context,
                                               status_code=status)
