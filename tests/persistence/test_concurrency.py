"""Many messages at once, through the real engine and the real SQLite file.

DESIGN.md, "One transaction per inbound message": writers are serialised, so nothing
is lost and nothing raises "database is locked".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from engine.core.ports import Inbound, Outbound
from engine.wiring import Wiring
from tests.support.wiring import rows

PHONE = "+5491123456789"
# Not understood in `greeting` (no intent), so the session stays open there: the first
# message opens it and is answered by the greeting alone, each later one is a miss.
IDLE_TEXT = "mmm"


def run_together(count: int, work: Callable[[int], list[Outbound]]) -> list[Any]:
    """Run `work(i)` in `count` threads released at once; what each returned or raised."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def target(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def send(wiring: Wiring, phone: str, message_id: str) -> list[Outbound]:
    return wiring.conversations.handle(
        Inbound(channel="whatsapp", phone=phone, text=IDLE_TEXT, message_id=message_id)
    )


def test_twenty_concurrent_messages_to_one_phone_share_one_session_and_lose_nothing(
    wiring: Wiring,
) -> None:
    n = 20
    results = run_together(n, lambda i: send(wiring, PHONE, f"SMsame{i:04d}"))

    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    sessions = rows(wiring, "SELECT * FROM sessions WHERE phone = :p", p=PHONE)
    assert len(sessions) == 1
    session = sessions[0]
    assert session["closed_at"] is None and session["state"] == "greeting"
    assert session["channel"] == "whatsapp"
    # Version arithmetic (engine/runtime.py, engine/unit.py, persistence/store.py):
    # - the first message's transaction inserts the row with version 1
    #   (SqlTx.create_session), Work.opened() remembers read version 1, and
    #   Work.flush() saves it in the same transaction: version 2;
    # - each of the other n - 1 messages reads the open row at version v and saves it
    #   with WHERE version = v: v + 1.
    # So version = 2 + (n - 1) = 1 + n: exactly one bump per message, none lost.
    assert session["version"] == 1 + n

    inbound = rows(wiring, "SELECT session_id, twilio_sid, body FROM messages "
                   "WHERE direction = 'in'")
    assert len(inbound) == n
    assert {m["twilio_sid"] for m in inbound} == {f"SMsame{i:04d}" for i in range(n)}
    assert {m["session_id"] for m in inbound} == {session["id"]}

    # One reply per message, all queued for the same session: the greeting for the
    # first, then re-prompts, with the options every third miss in a row.
    outbound = rows(wiring, "SELECT id, session_id, body, status FROM messages "
                    "WHERE direction = 'out' ORDER BY id")
    assert len(outbound) == n
    assert {m["session_id"] for m in outbound} == {session["id"]}
    assert {m["status"] for m in outbound} == {"pending"}
    bodies = [m["body"] for m in outbound]
    assert "probar gratis" in bodies[0]
    misses = n - 1
    assert sum("*prueba* para pedir" in b for b in bodies) == misses // 3
    assert sum("¿Querés la prueba gratis?" in b for b in bodies) == misses - misses // 3
    # The count is the engine's own column; the flow's context stays untouched.
    assert (session["misses"], session["context"]) == (misses % 3, "{}")

    # What handle() returned is exactly what was queued.
    returned = sorted(o.id for r in results for o in r)
    assert returned == [m["id"] for m in outbound]

    events = rows(wiring, "SELECT session_id, from_state, to_state, trigger "
                  "FROM session_events")
    assert events == [{"session_id": session["id"], "from_state": None,
                       "to_state": "greeting", "trigger": "start"}]


def test_a_message_id_repeated_concurrently_is_processed_once(wiring: Wiring) -> None:
    results = run_together(10, lambda i: send(wiring, PHONE, "SMrepeated"))

    assert [r for r in results if isinstance(r, BaseException)] == []
    assert sum(1 for r in results if r) == 1  # one thread answered, the rest got []
    assert len(rows(wiring, "SELECT id FROM messages WHERE direction = 'in'")) == 1
    assert len(rows(wiring, "SELECT id FROM messages WHERE direction = 'out'")) == 1
    [session] = rows(wiring, "SELECT version FROM sessions")
    assert session["version"] == 2


def test_fifty_concurrent_phones_each_get_a_session_without_database_locked(
    wiring: Wiring,
) -> None:
    n = 50
    phones = [f"+54911{i:08d}" for i in range(n)]
    results = run_together(n, lambda i: send(wiring, phones[i], f"SMmany{i:04d}"))

    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    assert errors == []
    sessions = rows(wiring, "SELECT phone, state, version FROM sessions "
                    "WHERE closed_at IS NULL")
    assert sorted(s["phone"] for s in sessions) == phones
    assert {(s["state"], s["version"]) for s in sessions} == {("greeting", 2)}
    assert len(rows(wiring, "SELECT id FROM messages WHERE direction = 'in'")) == n
    greetings = rows(wiring, "SELECT session_id FROM messages WHERE direction = 'out'")
    assert len(greetings) == n and len({g["session_id"] for g in greetings}) == n
    assert len(rows(wiring, "SELECT id FROM session_events WHERE trigger = 'start'")) == n
    assert all(len(r) == 1 for r in results)


def test_fifty_concurrent_phones_through_two_engines_on_one_file(
    make_wiring: Callable[..., Wiring],
) -> None:
    # Two processes' worth of stores (separate write locks): SQLite's BEGIN IMMEDIATE
    # and busy_timeout must serialise them, with no "database is locked".
    first, second = make_wiring(), make_wiring()
    n = 50
    phones = [f"+54911{i:08d}" for i in range(n)]
    results = run_together(
        n, lambda i: send(first if i % 2 else second, phones[i], f"SMtwo{i:04d}")
    )

    assert [repr(r) for r in results if isinstance(r, BaseException)] == []
    sessions = rows(first, "SELECT phone FROM sessions WHERE closed_at IS NULL")
    assert sorted(s["phone"] for s in sessions) == phones
    assert len(rows(first, "SELECT id FROM messages WHERE direction = 'in'")) == n
