"""Whether this worker's database takes a write now: what /healthz reports.

A `SELECT 1` said ok while no webhook could be stored (a read-only or full disk, a
deleted database file). The truth is a write: one tiny upsert of the `heartbeats` row,
through the writer, so it joins the batch under way instead of a commit of its own (on
PostgreSQL as on SQLite). The writer's own commits prove nothing: a batch that only
read (the outbox's idle claim) commits fine on a read-only disk. On SQLite the file's identity is
compared too, so a deleted or replaced file is caught although writes to the old inode
still succeed, and the free space of its folder (under 1 MiB is a full disk: a tiny
heartbeat may still fit in the WAL's old frames where a message no longer does).
The answer is kept for a second, so a busy health checker costs at most one write a
second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

from engine.core.errors import StoreError
from engine.server.writer import Writer
from persistence.store import SqlStore, SqlTx

__all__ = ["StorageProbe"]

_TTL = 1.0
# Below this much free space next to the SQLite file, the disk counts as full: a small
# write (the heartbeat) may still fit in the WAL's old frames, a message's would not.
MIN_FREE_BYTES = 1024 * 1024
_WRITE_PATIENCE = 5.0
_HEARTBEAT = ("INSERT INTO heartbeats (name, at) VALUES ('health', :at) "
              "ON CONFLICT (name) DO UPDATE SET at = excluded.at")


class StorageProbe:
    def __init__(self, writer: Writer, store: SqlStore, now: Callable[[], datetime], *,
                 ttl: float = _TTL) -> None:
        self._writer = writer
        self._store = store
        self._now = now
        self._ttl = ttl
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._problem: str | None = None

    def problem(self) -> str | None:
        """None when the database takes writes; else what is wrong, in one line."""
        with self._lock:
            at = time.monotonic()
            if self._checked_at is None or at - self._checked_at >= self._ttl:
                self._problem = self._probe()
                self._checked_at = time.monotonic()
            return self._problem

    def _probe(self) -> str | None:
        free = self._store.free_bytes()
        if free is not None and free[1] < MIN_FREE_BYTES:
            return f"the disk is full: {free[1]} bytes free in {free[0]}"
        try:
            self._store.check_file()
            self._writer.write(self._beat, timeout=_WRITE_PATIENCE)
        except StoreError as exc:
            return f"the database refuses writes: {exc}"[:300]
        except TimeoutError:
            return f"a write to the database took over {_WRITE_PATIENCE:g} s"
        return None

    def _beat(self, tx: SqlTx) -> None:
        tx.execute(_HEARTBEAT, at=tx.driver.time_out(self._now()))
