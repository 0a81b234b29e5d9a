"""What ops watch: lifecycle log lines, the stats block, and Prometheus metrics."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from engine.core.unit import Committed
from engine.monitoring.logs import mask_phone
from persistence import outbox
from persistence.models import messages, sessions
from persistence.store import SqlStore

__all__ = ["Metrics", "closes_block", "lifecycle_logger", "stats_block"]

log = logging.getLogger("tertulia.sessions")


def lifecycle_logger(committed: Committed) -> None:
    """Conversations listener: one line per lifecycle event, with fields for LOG_FORMAT=json."""
    for session in committed.opened:
        _event("created", session.id, session.phone, session.state)
    for session in committed.renewed:
        if session.is_open:
            _event("renewed", session.id, session.phone, session.state)
    for session in committed.warned:
        _event("warned", session.id, session.phone, session.state)
    for session in committed.closed:
        _event("closed", session.id, session.phone, session.state, reason=session.close_reason)


def _event(event: str, session_id: int, phone: str, state: str, reason: str | None = None) -> None:
    fields = {"event": event, "session": session_id, "phone": mask_phone(phone), "state": state}
    suffix = ""
    if reason is not None:
        fields["reason"] = reason
        suffix = f" reason={reason}"
    log.info("session %s %s phone=%s state=%s%s", session_id, event, fields["phone"], state,
             suffix, extra={"fields": fields})


def stats_block(store: SqlStore, now: datetime, timeout: timedelta) -> str:
    """The seed system's stats block, which ops already know how to read."""
    query = (select(sessions.c.phone, sessions.c.started_at, sessions.c.expires_at)
             .where(sessions.c.closed_at.is_(None)).order_by(sessions.c.started_at))
    with store.reading() as conn:
        rows = conn.execute(query).all()
    minutes = f"{timeout.total_seconds() / 60:g}"
    lines = ["📊 === ESTADÍSTICAS DEL SISTEMA ===",
             f"👥 Sesiones activas: {len(rows)} (timeout: {minutes} min)"]
    if rows:
        lines.append("👥 Sesiones activas:")
    for row in rows:
        age = int((now - row.started_at).total_seconds() // 60)
        left = max(0, int((row.expires_at - now).total_seconds() // 60))
        lines.append(f"   - {mask_phone(row.phone)}: activa por {age}min, timeout en {left}min")
    return "\n".join(lines)


def closes_block(counts: Mapping[str, int], known: Iterable[str]) -> str:
    """Closed sessions by reason: every reason the rows hold, and the known ones at 0."""
    lines = ["🔚 Sesiones cerradas por motivo:"]
    for reason in sorted({*counts, *known}):
        lines.append(f"   - {reason}: {counts.get(reason, 0)}")
    return "\n".join(lines)


class _TableGauges(Collector):
    """Gauges read from the tables at scrape time, so every process reports the truth."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        open_sessions = GaugeMetricFamily("tertulia_sessions_open", "Open sessions",
                                          labels=["flow", "state"])
        pending = GaugeMetricFamily("tertulia_outbox_pending", "Outbound rows not yet sent")
        with self._store.reading() as conn:
            for flow, state, count in conn.execute(
                select(sessions.c.flow, sessions.c.state, func.count())
                .where(sessions.c.closed_at.is_(None))
                .group_by(sessions.c.flow, sessions.c.state)
            ):
                open_sessions.add_metric([flow, state], count)
            pending.add_metric([], conn.execute(
                select(func.count()).select_from(messages)
                .where(outbox.unsent())
            ).scalar_one())
        yield open_sessions
        yield pending


class Metrics:
    """The process's Prometheus metrics, in a registry of its own."""

    def __init__(self, store: SqlStore, *, close_reasons: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter("tertulia_messages", "Messages", ["direction"], registry=r)
        self.closes = Counter("tertulia_session_closes", "Sessions closed", ["reason"],
                              registry=r)
        for reason in close_reasons:  # known reasons show at 0 before their first close
            self.closes.labels(reason)
        self.timeouts = Counter("tertulia_timeouts_fired", "Timeouts fired", registry=r)
        self.timeout_lag = Histogram(
            "tertulia_timeout_lag_seconds", "Delay from expires_at to the close", registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
        )
        self.outbox = Counter("tertulia_outbox_results", "Outbox send outcomes", ["outcome"],
                              registry=r)
        self.webhook = Histogram("tertulia_webhook_seconds", "Webhook handling time",
                                 ["endpoint"], registry=r)
        r.register(_TableGauges(store))

    def on_commit(self, committed: Committed) -> None:
        """Conversations listener."""
        inbound = len(committed.opened) + len(committed.renewed)
        if inbound:
            self.messages.labels("in").inc(inbound)
        if committed.outbound:
            self.messages.labels("out").inc(len(committed.outbound))
        for session in committed.closed:
            self.closes.labels(session.close_reason or "unknown").inc()
            if session.close_reason == "timeout" and session.closed_at is not None:
                self.timeouts.inc()
                lag = (session.closed_at - session.expires_at).total_seconds()
                self.timeout_lag.observe(max(0.0, lag))

    def on_outbox(self, outcome: str) -> None:
        self.outbox.labels(outcome).inc()
