"""Sessions pinned to their flow's version: a flow edited, renamed or removed while
users talk to it. Each "restart" wires the app anew on the same database, as `serve`
loads flows at start; what users receive and what ops read are checked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.core.clock import FakeClock
from engine.core.flow import BASE_TEXTS
from engine.core.pinning import stale_sessions
from engine.core.ports import Inbound
from engine.flowfiles import load_flows
from engine.server.worker import Worker
from engine.wiring import Wiring
from persistence import queries
from tests.support.booking import BOOKING_V1, BOOKING_V2, flows_folder, write_flow
from tests.support.wiring import make_settings, rows

ANA = "+5491123450001"
BETO = "+5491123450002"
CATA = "+5491123450003"
CHANGED = BASE_TEXTS["flow_changed"]

Restart = Callable[..., Wiring]


class Users:
    """Phones that write to whichever wiring is current."""

    def __init__(self) -> None:
        self.count = 0

    def say(self, wiring: Wiring, phone: str, text: str) -> list[str]:
        self.count += 1
        inbound = Inbound(channel="whatsapp", phone=phone, text=text,
                          message_id=f"SMv{self.count:05d}")
        return [o.body for o in wiring.conversations.handle(inbound)]


@pytest.fixture
def users() -> Users:
    return Users()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return flows_folder(tmp_path, BOOKING_V1)


@pytest.fixture
def restart(make_wiring: Callable[..., Wiring], folder: Path) -> Restart:
    def start(default: str = "booking") -> Wiring:
        return make_wiring(FLOWS_DIR=str(folder), DEFAULT_FLOW=default)
    return start


def latest(wiring: Wiring, phone: str) -> dict[str, Any]:
    return rows(wiring, "SELECT * FROM sessions WHERE phone = :p ORDER BY id DESC LIMIT 1",
                p=phone)[0]


def all_of(wiring: Wiring, phone: str) -> list[dict[str, Any]]:
    return rows(wiring, "SELECT * FROM sessions WHERE phone = :p ORDER BY id", p=phone)


def test_a_new_session_is_pinned_to_the_version_of_its_flow(
    restart: Restart, users: Users, folder: Path
) -> None:
    wiring = restart()
    users.say(wiring, ANA, "hola")

    expected = load_flows(folder, "booking").get("booking").version
    assert latest(wiring, ANA)["flow_version"] == expected
    edited = load_flows(write_flow(folder, BOOKING_V2).parent, "booking").get("booking")
    assert edited.version != expected


def test_an_edited_flow_applies_to_new_sessions_and_older_ones_carry_on(
    restart: Restart, users: Users, folder: Path
) -> None:
    v1 = restart()
    users.say(v1, ANA, "hola")
    users.say(v1, ANA, "4")  # Ana waits in asking_hour, which V2 renames
    users.say(v1, CATA, "hola")  # Cata waits in asking_people, which V2 keeps
    write_flow(folder, BOOKING_V2)

    v2 = restart()
    assert users.say(v2, ANA, "21:00") == ["¿Te reservo la mesa para 4 a las 21:00? (sí/no)"]
    assert users.say(v2, CATA, "2") == ["Perfecto, 2 personas. ¿A qué hora?"]
    assert users.say(v2, BETO, "hola") == ["¿Para cuántas personas reservamos?"]

    version = v2.flows.get("booking").version
    assert [(latest(v2, p)["state"], latest(v2, p)["flow_version"]) for p in (ANA, CATA, BETO)
            ] == [("confirming", version), ("choosing_hour", version),
                  ("asking_people", version)]
    moved = rows(v2, "SELECT from_state, to_state, trigger FROM session_events "
                 "WHERE trigger = 'flow_changed'")
    assert moved == [{"from_state": "asking_hour", "to_state": "choosing_hour",
                      "trigger": "flow_changed"}]


def test_a_session_whose_state_is_gone_closes_politely_and_the_user_starts_again(
    restart: Restart, users: Users, folder: Path, clock: FakeClock
) -> None:
    v1 = restart()
    for text in ("hola", "4", "21:00"):
        users.say(v1, ANA, text)
    clock.advance(timedelta(minutes=2))
    v1.conversations.expire(latest(v1, ANA)["id"])  # the reminder: Ana is now in `held`
    assert latest(v1, ANA)["state"] == "held"
    write_flow(folder, BOOKING_V2)  # no `held` any more, and no renamed entry for it

    v2 = restart()
    assert users.say(v2, ANA, "sí") == [CHANGED, "¿Para cuántas personas reservamos?"]
    first, second = all_of(v2, ANA)
    assert (first["state"], first["close_reason"]) == ("closed", "flow_changed")
    assert second["closed_at"] is None


def test_a_removed_flow_closes_its_sessions_on_their_next_message(
    restart: Restart, users: Users, folder: Path
) -> None:
    v1 = restart()
    users.say(v1, ANA, "hola")
    (folder / "booking.py").unlink()

    after = restart(default="trial")
    replies = users.say(after, ANA, "4")

    assert replies[0] == CHANGED
    assert "Soy el asistente de Tertulia" in replies[1]  # a fresh start in the default flow
    first, second = all_of(after, ANA)
    assert (first["close_reason"], second["flow"]) == ("flow_removed", "trial")


def test_a_removed_flow_does_not_roll_back_other_users_in_the_same_batch(
    restart: Restart, users: Users, folder: Path
) -> None:
    v1 = restart()
    users.say(v1, ANA, "hola")
    (folder / "booking.py").unlink()

    after = restart(default="trial")
    batch = [Inbound(channel="whatsapp", phone=phone, text="hola", message_id=f"SMb{n}")
             for n, phone in enumerate((BETO, ANA, CATA))]
    replies = after.conversations.handle_many(batch)

    assert [len(r) > 0 for r in replies] == [True, True, True]
    assert {latest(after, p)["flow"] for p in (ANA, BETO, CATA)} == {"trial"}
    assert rows(after, "SELECT count(*) AS n FROM messages WHERE direction = 'in'"
                )[0]["n"] == 4


def test_timeout_and_admin_close_of_a_removed_flow_close_it(
    restart: Restart, users: Users, folder: Path, clock: FakeClock
) -> None:
    v1 = restart()
    users.say(v1, ANA, "hola")
    users.say(v1, BETO, "hola")
    (folder / "booking.py").unlink()

    after = restart(default="trial")
    clock.advance(timedelta(minutes=4))
    assert after.conversations.expire(latest(after, ANA)["id"]) is None
    closed = after.conversations.close(latest(after, BETO)["id"])

    assert latest(after, ANA)["close_reason"] == "flow_removed"
    assert latest(after, BETO)["close_reason"] == "admin"
    assert [o.body for o in closed] == [BASE_TEXTS["admin_closed"]]


def test_start_up_warns_with_counts_about_sessions_that_will_close(
    restart: Restart, users: Users, folder: Path, tmp_path: Path, clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    v1 = restart()
    for phone in (ANA, BETO, CATA):
        users.say(v1, phone, "hola")
    (folder / "booking.py").unlink()

    settings = make_settings(tmp_path, FLOWS_DIR=str(folder), DEFAULT_FLOW="trial")
    worker = Worker(settings, clock=clock)
    try:
        with caplog.at_level(logging.WARNING, logger="tertulia"):
            worker.start()
    finally:
        worker.stop()

    assert ("3 open sessions use flow 'booking', which no file defines; they close on their "
            "next message or timeout (flow_removed)") in caplog.messages


def test_the_warning_counts_sessions_in_states_an_edit_removed(
    restart: Restart, users: Users, folder: Path
) -> None:
    v1 = restart()
    users.say(v1, ANA, "hola")
    users.say(v1, ANA, "4")
    write_flow(folder, BOOKING_V2.replace('    renamed = {"asking_hour": "choosing_hour"}\n',
                                          ""))
    v2 = restart()

    assert stale_sessions(v2.flows, queries.open_by_flow(v2.store)) == [
        "1 open session uses flow 'booking' in state 'asking_hour', which it no longer has; "
        "they close on their next message or timeout (flow_changed), unless the flow maps "
        "it in renamed = {'asking_hour': 'new_state'}"
    ]


def test_a_flow_changed_text_that_needs_a_missing_value_falls_back_to_the_engines(
    restart: Restart, users: Users, folder: Path
) -> None:
    own = BOOKING_V1.replace(
        '        "declined":',
        '        "flow_changed": "Perdón, {people} personas: cambiamos el servicio.",\n'
        '        "declined":')
    write_flow(folder, own)
    v1 = restart()
    users.say(v1, ANA, "hola")  # asking_people: no `people` in her context yet
    write_flow(folder, own.replace("asking_people", "counting"))

    v2 = restart()

    assert users.say(v2, ANA, "hola") == [CHANGED, "¿Para cuántas personas reservamos?"]
    assert all_of(v2, ANA)[0]["close_reason"] == "flow_changed"
