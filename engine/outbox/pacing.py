"""Pacing shared by every worker: TWILIO_MAX_MPS holds summed over all of them.

The next free send time of each Twilio sender lives in the database (`send_slots`).
A send reserves the next slot in a short transaction (which also checks, and extends,
the worker's claim on the row), sleeps until it, and goes. Slots are (1 + slack) / rate
apart. Twilio counts a message when it arrives, so the slack must cover two delays: the
sender waking after its slot, and the request then being built, written and carried.
A send that wakes more than `wake` after its slot gives the slot up and reserves another;
the rest of the slack (15 ms) is left for the trip. Then no one-second window at Twilio
holds more than `rate` sends, whichever worker sent them, as long as a request arrives
within 15 ms of leaving the pacer. The ceiling is rate / (1 + slack): 78.0/s at 80 MPS.
(With 20 ms of slack, all of it for waking, three workers put 81 in one second at the
fake Twilio: requests arrived up to a few ms after their slot's slack.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from engine.core.errors import ClaimLost

__all__ = ["SharedPacer"]

# Slot in epoch seconds, or None when the worker's claim on the row is gone.
Reserve = Callable[[float, float], float | None]


class SharedPacer:
    def __init__(
        self, rate: float, reserve: Reserve, *, slack: float = 0.025, wake: float = 0.010,
        clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        assert wake < slack, "part of the slack is for the request's trip"
        self.interval = (1.0 + slack) / rate
        self._wake = wake
        self._reserve = reserve
        self._clock = clock
        self._sleep = sleep
        # Every reservation updates one shared row: a worker's senders queue here, not
        # in the database, where each waiting one held a pooled connection (on
        # PostgreSQL 32 waiters overflowed the pool: a new connection per send).
        self._reserving = threading.Lock()

    def wait(self, row_id: int) -> float:
        """Block until a slot of ours comes; returns it. ClaimLost if another worker took
        the row over meanwhile: it must not be sent from here."""
        while True:
            with self._reserving:
                slot = self._reserve(self._clock(), self.interval)
            if slot is None:
                raise ClaimLost(row_id)
            delay = slot - self._clock()
            if delay > 0:
                self._sleep(delay)
            if self._clock() <= slot + self._wake:
                return slot
