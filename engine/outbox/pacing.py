"""Pacing shared by every worker: TWILIO_MAX_MPS holds summed over all of them.

The next free send time of each Twilio sender lives in the database (`send_slots`).
A send reserves the next slot in a short transaction (which also checks, and extends,
the worker's claim on the row), sleeps until it, and goes. Slots are (1 + slack) / rate
apart, and a send that wakes more than `slack` after its slot gives it up and reserves
another: every send then leaves within [slot, slot + slack], so no one-second window
can hold more than `rate` of them, whichever worker sends. The ceiling is
rate / (1 + slack): 78.4/s at 80 MPS with 20 ms of slack.
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
        self, rate: float, reserve: Reserve, *, slack: float = 0.020,
        clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = (1.0 + slack) / rate
        self._slack = slack
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
            if self._clock() <= slot + self._slack:
                return slot
