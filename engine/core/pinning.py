"""Sessions pinned to the version of their flow, and what happens when the flow changes.

A session row keeps the hash of the flow definition it runs (SessionRecord.flow_version).
Flows load at start, so a changed file meets its older sessions after a restart. At a
session's next message, timeout or close the engine compares versions and either keeps
the session (its state still exists), moves it (`Flow.renamed`), or closes it politely
with reason flow_changed; a session whose flow no file defines closes with flow_removed.
None of this raises: a removed flow must not fail the batch it is in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from engine.core.errors import FlowDefinitionError
from engine.core.flow import BASE_TEXTS, ENGINE_TRIGGERS, CompiledFlow
from engine.core.ports import SessionRecord
from engine.core.registry import FlowRegistry
from engine.core.unit import Work

__all__ = ["close_anyway", "current_flow", "stale_sessions"]


def current_flow(
    work: Work, session: SessionRecord, flows: FlowRegistry, *, notify: bool = True
) -> CompiledFlow | None:
    """The session's flow, with the session brought onto its loaded version; None when
    the session had to close for it (flow_removed or flow_changed)."""
    flow = flows.flows.get(session.flow)
    if flow is None:
        text = _text(flows.default, "flow_changed", session) if notify else None
        work.close_directly(session, reason="flow_removed", trigger="flow_removed", text=text,
                            detail=f"no file defines flow {session.flow!r} any more")
        return None
    if session.flow_version == flow.version:
        return flow
    return _upgrade(work, session, flow, notify=notify)


def close_anyway(
    work: Work, session: SessionRecord, flows: FlowRegistry, trigger: str, *,
    notify: bool = True, detail: str | None = None,
) -> None:
    """Fire one of the engine's closes (admin_close, fail, expire), even when the
    session's flow or state no longer exists: ops and the sweep must never be stuck."""
    flow = flows.flows.get(session.flow)
    if flow is not None and session.state in flow.open_states():
        work.transition(session, flow, trigger, notify=notify, detail=detail)
        return
    _, reason, keys = ENGINE_TRIGGERS[trigger]
    texts = flow or flows.default
    text = "\n\n".join(_text(texts, key, session) for key in keys) if notify and keys else None
    work.close_directly(session, reason=reason, trigger=trigger, text=text, detail=detail)


def _text(flow: CompiledFlow, key: str, session: SessionRecord) -> str:
    """The flow's version of an engine text, or the engine's own if the flow's needs a
    value this session lacks: a close that must not fail cannot fail on a text."""
    try:
        return flow.render(key, session.context)
    except FlowDefinitionError:
        return BASE_TEXTS[key]


def _upgrade(
    work: Work, session: SessionRecord, flow: CompiledFlow, *, notify: bool
) -> CompiledFlow | None:
    old_version = session.flow_version or "unknown"
    change = f"flow {flow.name!r} changed ({old_version} -> {flow.version})"
    open_states = flow.open_states()
    if session.state not in open_states:
        renamed = flow.renamed.get(session.state)
        if renamed not in open_states:
            text = _text(flow, "flow_changed", session) if notify else None
            work.close_directly(session, reason="flow_changed", trigger="flow_changed",
                                text=text, detail=f"{change}: state {session.state!r} is gone")
            return None
        work.touch(session)
        work.tx.add_event(session_id=session.id, from_state=session.state, to_state=renamed,
                          trigger="flow_changed", detail=f"{change}: state renamed",
                          at=work.now)
        session.state = renamed
    work.touch(session)
    session.flow_version = flow.version
    return flow


def stale_sessions(
    flows: FlowRegistry, open_counts: Iterable[tuple[str, str | None, str, int]]
) -> list[str]:
    """Warnings, with counts, about open sessions that will close because their flow or
    their state is gone; `open_counts` is (flow, flow_version, state, how many)."""
    removed: Counter[str] = Counter()
    gone: Counter[tuple[str, str]] = Counter()
    for name, version, state, count in open_counts:
        flow = flows.flows.get(name)
        if flow is None:
            removed[name] += count
        elif version != flow.version and state not in flow.open_states() and (
                flow.renamed.get(state) not in flow.open_states()):
            gone[(name, state)] += count
    lines = [f"{_sessions(n)} flow {name!r}, which no file defines; they close on their "
             "next message or timeout (flow_removed)" for name, n in sorted(removed.items())]
    lines += [f"{_sessions(n)} flow {name!r} in state {state!r}, which it no longer has; "
              f"they close on their next message or timeout (flow_changed), unless the flow "
              f"maps it in renamed = {{{state!r}: 'new_state'}}"
              for (name, state), n in sorted(gone.items())]
    return lines


def _sessions(count: int) -> str:
    return f"{count} open session{'s' if count != 1 else ''} use{'s' if count == 1 else ''}"
