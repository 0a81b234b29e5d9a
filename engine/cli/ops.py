"""Ops commands: `tertulia sessions ...` and `tertulia stats`.

They only write rows; any running `serve` worker sends any notice they queue within
about a second. Phones are masked (in transcripts too) unless ops ask for them with
--show-phones; passwords are never shown.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from engine.core.errors import FlowDefinitionError, SessionNotFound, TertuliaError
from engine.core.ports import SessionRecord
from engine.core.text import digits
from engine.monitoring.logs import mask_phone
from engine.scheduling.timeouts import forget
from engine.settings import load_settings
from engine.wiring import Wiring, wire
from persistence import ops, queries

__all__ = ["sessions", "stats", "warn_skipped"]


def _services() -> Wiring:
    """The wiring for an ops command: a broken flow file other than the default's is
    skipped with a warning, so the operator is never locked out during an incident."""
    try:
        wiring = wire(load_settings(), strict_flows=False)
    except TertuliaError as exc:
        raise click.ClickException(str(exc)) from None
    warn_skipped(wiring.flow_problems)
    return wiring


def warn_skipped(problems: list[FlowDefinitionError]) -> None:
    for problem in problems:
        click.echo(f"warning: flow file skipped: {problem}", err=True)


_SHOW_PHONES = click.option(
    "--show-phones", is_flag=True,
    help="Print full phone numbers (masked by default; mind where the output goes).")


def _masker(show_phones: bool) -> Callable[[str], str]:
    return (lambda text: text) if show_phones else mask_phone


def _row(session: SessionRecord, now: datetime, show_phones: bool = False) -> dict[str, Any]:
    left = (session.expires_at - now).total_seconds() if session.is_open else None
    return {
        "id": session.id, "channel": session.channel,
        "phone": _masker(show_phones)(session.phone),
        "flow": session.flow, "state": session.state,
        "age_seconds": int((now - session.started_at).total_seconds()),
        "seconds_left": max(0, int(left)) if left is not None else None,
        "close_reason": session.close_reason,
    }


@click.group(invoke_without_command=True)
@click.option("--all", "include_closed", is_flag=True, help="Closed sessions too.")
@click.option("--phone", default=None, help="Only this phone (full E.164 number).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_SHOW_PHONES
@click.pass_context
def sessions(ctx: click.Context, include_closed: bool, phone: str | None, as_json: bool,
             show_phones: bool) -> None:
    """List open sessions (see also: show, close)."""
    if ctx.invoked_subcommand is not None:
        return
    wiring = _services()
    try:
        now = wiring.clock.now()
        found = ops.list_sessions(wiring.store, include_closed=include_closed, phone=phone)
        rows = [_row(s, now, show_phones) for s in found]
    finally:
        wiring.close()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    click.echo(f"{'ID':>6}  {'CHANNEL':8}  {'PHONE':16}  {'FLOW':8}  {'STATE':14}  "
               f"{'AGE':>8}  {'LEFT':>6}  REASON")
    for r in rows:
        left = "-" if r["seconds_left"] is None else f"{r['seconds_left']}s"
        age = f"{r['age_seconds'] // 60}m{r['age_seconds'] % 60:02d}s"
        click.echo(f"{r['id']:>6}  {r['channel']:8}  {r['phone']:16}  {r['flow']:8}  "
                   f"{r['state']:14}  {age:>8}  {left:>6}  {r['close_reason'] or ''}")
    if not rows:
        click.echo("(no sessions)" if include_closed else "(no open sessions)")


@sessions.command("show")
@click.argument("session_id", type=int)
@_SHOW_PHONES
def show(session_id: int, show_phones: bool) -> None:
    """Print the transcript and the events of session SESSION_ID."""
    mask = _masker(show_phones)
    wiring = _services()
    try:
        found = ops.transcript(wiring.store, session_id)
    finally:
        wiring.close()
    if found is None:
        raise click.ClickException(str(SessionNotFound("id", session_id)))
    s = found.session
    click.echo(f"session {s.id} · {s.channel} {mask(s.phone)} · flow {s.flow} · "
               f"state {s.state}" + (f" · closed: {s.close_reason}" if s.close_reason else ""))
    click.echo(f"started {s.started_at:%Y-%m-%d %H:%M:%S} UTC · expires "
               f"{s.expires_at:%H:%M:%S} UTC · version {s.version}")
    click.echo("\ntranscript:")
    for m in found.messages:
        arrow = "→ user" if m["direction"] == "in" else "← bot "
        body = m["body_redacted"] or m["body"]  # a pending password never reaches the screen
        click.echo(f"  {m['created_at']:%H:%M:%S} {arrow} [{m['status']}] {mask(body)}")
    click.echo("\nevents:")
    for e in found.events:
        detail = f" ({mask(e['detail'])})" if e["detail"] else ""
        click.echo(f"  {e['at']:%H:%M:%S} {e['from_state'] or '·'} → {e['to_state']} "
                   f"[{e['trigger']}]{detail}")


@sessions.command("close")
@click.argument("target")
@click.option("--quiet", is_flag=True, help="Do not send the closing notice.")
def close(target: str, quiet: bool) -> None:
    """Close session TARGET (an id, or a phone's open sessions) with reason admin."""
    wiring = _services()
    try:
        ids = _targets(wiring, target)
        for session_id in ids:
            wiring.conversations.close(session_id, notify=not quiet)
        forget(wiring.db, ids)
    finally:
        wiring.close()
    notice = "no notice" if quiet else "closing notice queued"
    click.echo(f"closed {len(ids)} session(s) {', '.join(map(str, ids))} (admin, {notice})")


def _targets(wiring: Wiring, target: str) -> list[int]:
    if digits(target):
        found = ops.transcript(wiring.store, int(target))
        if found is None or not found.session.is_open:
            raise click.ClickException(f"no open session with id {target}.")
        return [found.session.id]
    match = [s.id for s in ops.find_open(wiring.store, target)]
    if not match:
        raise click.ClickException(str(SessionNotFound("phone", mask_phone(target))))
    return match


@click.command()
def stats() -> None:
    """Print the stats block once, then the closed sessions by reason."""
    from engine.monitoring.metrics import closes_block, stats_block

    wiring = _services()
    try:
        click.echo(stats_block(wiring.store, wiring.clock.now(),
                               wiring.settings.session_timeout))
        click.echo(closes_block(queries.close_reason_counts(wiring.store),
                                wiring.flows.close_reasons()))
    finally:
        wiring.close()
