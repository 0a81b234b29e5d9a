"""A restaurant booking flow in three versions, as an author edits it while users talk.

- BOOKING_V1: people -> hour -> confirm; confirming has its own timeout that sends a
  reminder and moves to `held`, which closes (timeout) a minute later.
- BOOKING_V2: the same flow edited: `asking_hour` renamed to `choosing_hour` (mapped in
  `renamed`), `held` and the reminder removed, the confirmation worded anew.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from tests.support.paths import FLOWS

__all__ = ["BOOKING_V1", "BOOKING_V2", "flows_folder", "write_flow"]

BOOKING_V1 = '''
from datetime import timedelta

from engine import Decision, Flow, Timeout, Turn, step


class Booking(Flow):
    name = "booking"

    states = ["asking_people", "asking_hour", "confirming", "held", "closed", "timeout",
              "cancelled"]
    initial = "asking_people"
    final = ["closed", "timeout", "cancelled"]
    close_reasons = {"booked": "closed"}

    texts = {
        "greeting": "¿Para cuántas personas reservamos?",
        "ask_people_again": "Decime un número, por ejemplo 4.",
        "ask_hour": "Perfecto, {people} personas. ¿A qué hora?",
        "confirm": "Mesa para {people} a las {hour}. ¿Confirmo? (sí/no)",
        "reminder": "¿Seguís ahí? Te guardo la mesa de las {hour} un minuto más.",
        "booked": "¡Listo! Reservado para {people} a las {hour}.",
        "declined": "Dale, no reservo nada.",
    }
    transitions = [
        {"trigger": "take_people", "source": "asking_people", "dest": "asking_hour",
         "say": "ask_hour"},
        {"trigger": "take_hour", "source": "asking_hour", "dest": "confirming",
         "say": "confirm"},
        {"trigger": "remind", "source": "confirming", "dest": "held", "say": "reminder"},
        {"trigger": "book", "source": ["confirming", "held"], "dest": "closed",
         "say": "booked", "reason": "booked"},
        {"trigger": "decline", "source": ["confirming", "held"], "dest": "closed",
         "say": "declined", "reason": "goodbye"},
    ]
    reprompts = {"asking_people": "ask_people_again"}
    timeouts = {
        "confirming": Timeout(timedelta(minutes=2), "remind"),
        "held": Timeout(timedelta(minutes=1)),
    }

    @step("asking_people")
    def people(self, turn: Turn) -> Decision:
        """A number of people moves on to the hour."""
        if not turn.text.strip().isdigit():
            return turn.not_understood()
        turn.context["people"] = int(turn.text.strip())
        return turn.move("take_people")

    @step("asking_hour")
    def hour(self, turn: Turn) -> Decision:
        """Any answer is the hour."""
        turn.context["hour"] = turn.text.strip()
        return turn.move("take_hour")

    @step("confirming")
    def confirm(self, turn: Turn) -> Decision:
        """Yes books, no declines."""
        return _yes_no(turn)

    @step("held")
    def hold(self, turn: Turn) -> Decision:
        """Still yes or no, after the reminder."""
        return _yes_no(turn)


def _yes_no(turn: Turn) -> Decision:
    if turn.intent == "afirmacion":
        return turn.move("book")
    if turn.intent == "negacion":
        return turn.move("decline")
    return turn.not_understood()
'''

_REMIND_ROW = ('        {"trigger": "remind", "source": "confirming", "dest": "held", '
               '"say": "reminder"},\n')

BOOKING_V2 = (
    BOOKING_V1
    .replace('"asking_hour", "confirming", "held",', '"choosing_hour", "confirming",')
    .replace('    close_reasons = {"booked": "closed"}\n',
             '    close_reasons = {"booked": "closed"}\n'
             '    renamed = {"asking_hour": "choosing_hour"}\n')
    .replace('"source": "asking_people", "dest": "asking_hour"',
             '"source": "asking_people", "dest": "choosing_hour"')
    .replace('"source": "asking_hour"', '"source": "choosing_hour"')
    .replace(_REMIND_ROW, "")
    .replace('["confirming", "held"]', '"confirming"')
    .replace('''    timeouts = {
        "confirming": Timeout(timedelta(minutes=2), "remind"),
        "held": Timeout(timedelta(minutes=1)),
    }
''', "")
    .replace('''        "reminder": "¿Seguís ahí? Te guardo la mesa de las {hour} un minuto más.",
''', "")
    .replace('"Mesa para {people} a las {hour}. ¿Confirmo? (sí/no)"',
             '"¿Te reservo la mesa para {people} a las {hour}? (sí/no)"')
    .replace('@step("asking_hour")', '@step("choosing_hour")')
    .replace('''    @step("held")
    def hold(self, turn: Turn) -> Decision:
        """Still yes or no, after the reminder."""
        return _yes_no(turn)
''', "")
    .replace("from datetime import timedelta\n\n", "")
    .replace("Flow, Timeout, Turn", "Flow, Turn")
)


def write_flow(folder: Path, source: str, name: str = "booking.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def flows_folder(tmp_path: Path, booking: str | None = BOOKING_V1) -> Path:
    """A FLOWS_DIR with the shipped trial flow and, unless None, this booking flow."""
    folder = tmp_path / "flows"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(FLOWS / "trial.py", folder / "trial.py")
    if booking is not None:
        write_flow(folder, booking)
    return folder
