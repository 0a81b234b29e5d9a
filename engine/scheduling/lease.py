"""The scheduler lease: which worker runs APScheduler, decided by a row in the database.

APScheduler 3 cannot share a job store between schedulers, so exactly one worker at a
time runs it. The database is the only coordinator, on every backend: a row in
`leases` names the holder, its expiry (the database's clock, so machines need not
agree on the time) and a fencing token that grows at every change of holder. The
holder renews it about every second; another worker takes it once it has expired.

Why not a session-level advisory lock: a frozen holder (SIGSTOP) keeps one for as long
as it is frozen, a vanished machine for the TCP keepalive time, and transaction
poolers drop them. A lease expires whatever the holder does, and the fencing token
lets every effect check, in its own transaction, that its holder still holds it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from engine.core.ports import Fence
from persistence import leases
from persistence.store import SqlStore

__all__ = ["Lease"]

log = logging.getLogger("tertulia.lease")


class Lease:
    """One worker's view of one lease row; thread-safe."""

    def __init__(
        self, store: SqlStore, *, holder: str, ttl_seconds: float, name: str = "scheduler",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.holder = holder
        self._store = store
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._token: int | None = None
        self._until: datetime | None = None
        # This worker's own deadline: the lease may already be gone at the database a
        # little earlier than this only if the database's clock runs fast; it is
        # measured from before the renewal was sent, so it errs on the early side.
        self._deadline = 0.0
        _ensure_row(store, name)

    def renew(self) -> bool:
        """Take the lease if it is free or expired, or extend it if held; True if held."""
        started = self._monotonic()
        try:
            row = self._store.run(lambda tx: leases.renew(tx, self.name, self.holder,
                                                          self._ttl))
        except Exception as exc:
            log.warning("lease %r: renewal failed (%s)", self.name, exc)
            row = None
        with self._lock:
            if row is None:
                self._token = None if started >= self._deadline else self._token
                return self.held
            self._token = int(row[0])
            self._until = row[1]
            self._deadline = started + self._ttl
            return True

    @property
    def held(self) -> bool:
        return self._token is not None and self._monotonic() < self._deadline

    def fence(self) -> Fence | None:
        """The fence to act under, or None if this worker may not act now."""
        with self._lock:
            if not self.held or self._token is None:
                return None
            return Fence(self.name, self.holder, self._token)

    def describe(self) -> dict[str, object]:
        with self._lock:
            held = self.held
            return {"held": held, "token": self._token if held else None,
                    "until": self._until.isoformat() if held and self._until else None}

    def release(self) -> None:
        """Give the lease up at once (a clean stop), so another worker need not wait."""
        with self._lock:
            token = self._token
            self._token = None
            self._deadline = 0.0
        if token is not None:
            try:
                self._store.run(lambda tx: leases.release(tx, self.name, self.holder, token))
            except Exception as exc:
                log.warning("lease %r: release failed (%s); it expires by itself", self.name,
                            exc)


def _ensure_row(store: SqlStore, name: str) -> None:
    store.run(lambda tx: leases.ensure(tx, name))
