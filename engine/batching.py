"""Group commit: one writer thread commits the webhooks that queued up meanwhile together.

SQLite takes one writer at a time, and each commit costs as much as a whole message's
statements; batching turns N BEGIN IMMEDIATE/COMMIT pairs into one. Each message still
runs in its own savepoint (Engine.handle_many), and each webhook is answered only after
the commit that holds its message.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from engine.ports import Inbound, Outbound
from engine.runtime import Engine

__all__ = ["GroupCommit"]

log = logging.getLogger("tertulia.batching")
_STOP = object()


class GroupCommit:
    def __init__(self, engine: Engine, *, max_batch: int = 64) -> None:
        self._engine, self._max = engine, max_batch
        # Credential providers may call slow APIs: never on the writer thread.
        self._issuer = ThreadPoolExecutor(4, thread_name_prefix="credentials")
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="group-commit", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, inbound: Inbound) -> Future[list[Outbound]]:
        future: Future[list[Outbound]] = Future()
        self._queue.put((inbound, future))
        return future

    def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
        self._issuer.shutdown(wait=True)

    def _loop(self) -> None:
        while True:
            batch, stopping = self._take()
            if batch:
                self._commit(batch)
            if stopping:
                return

    def _take(self) -> tuple[list[tuple[Inbound, Future[list[Outbound]]]], bool]:
        batch: list[tuple[Inbound, Future[list[Outbound]]]] = []
        item = self._queue.get()
        while True:
            if item is _STOP:
                return batch, True
            batch.append(item)  # type: ignore[arg-type]
            if len(batch) >= self._max:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _issue_later(self, task: Callable[[], object]) -> None:
        def run() -> None:
            try:
                task()
            except Exception:
                log.exception("issuing credentials failed after the commit")

        self._issuer.submit(run)

    def _commit(self, batch: list[tuple[Inbound, Future[list[Outbound]]]]) -> None:
        try:
            results = self._engine.handle_many([inbound for inbound, _ in batch],
                                               later=self._issue_later)
        except BaseException as exc:
            for _, future in batch:
                future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), outbound in zip(batch, results, strict=True):
            future.set_result(outbound)
