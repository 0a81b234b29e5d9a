"""The process's single writer: group commit for webhooks and the outbox's bookkeeping.

SQLite takes one writer at a time and a commit costs about as much as a whole message's
statements. One thread drains what queued up meanwhile (inbound messages, and small
writes such as "message 42 was sent") into one BEGIN IMMEDIATE ... COMMIT; each message
still runs in its own savepoint (Conversations.run_batch). Nothing is answered before the
commit that holds it. With every write on one thread, nobody queues for the write lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from engine.core.conversations import Conversations
from engine.core.errors import StoreError
from engine.core.ports import Fence, Inbound, Outbound, SessionRecord
from engine.core.unit import Work
from persistence.deferred import DeferredTx
from persistence.store import SqlStore, SqlTx

__all__ = ["Writer"]

log = logging.getLogger("tertulia.writer")
# A batch that lost a conflict with another worker is run again, this many times in all.
_ATTEMPTS = 5
_RETRY_PAUSE = 0.02
# Overdue sessions closed per transaction when the scan runs apart from the batches:
# short enough that the row locks it holds never keep a conversation waiting long.
_SCAN_CHUNK = 100
T = TypeVar("T")
_STOP = object()


@dataclass(frozen=True, slots=True)
class _Message:
    inbound: Inbound
    future: asyncio.Future[list[Outbound]]


@dataclass(frozen=True, slots=True)
class _Expiry:
    session_id: int
    fence: Fence | None
    then: Callable[[datetime | None], None]


@dataclass(frozen=True, slots=True)
class _Scan:
    """Expire every overdue session in this round (see Writer.expire_overdue)."""

    limit: int
    future: Future[int]


@dataclass(frozen=True, slots=True)
class _Write:
    fn: Callable[[SqlTx], Any]
    future: Future[Any]


_Item = _Message | _Write | _Expiry | _Scan


class Writer:
    """The process's single writer thread (see the module docstring)."""

    def __init__(
        self, conversations: Conversations, store: SqlStore, *, max_batch: int = 128
    ) -> None:
        self._conversations = conversations
        self._store = store
        self._max = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="writer", daemon=True)
        # Credential providers may call slow APIs: never on the writer thread.
        self._issuer = ThreadPoolExecutor(4, thread_name_prefix="credentials")
        self.running = False
        # Drops the timeout jobs of the sessions a scan closed, in the scan's transaction
        # (set by the worker that owns the jobs).
        self.forget_jobs: Callable[[SqlTx, list[int]], None] | None = None

    def start(self) -> None:
        self.running = True
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, inbound: Inbound) -> asyncio.Future[list[Outbound]]:
        """Queue a message from the running event loop; the future resolves on that loop
        after the commit that holds it."""
        future: asyncio.Future[list[Outbound]] = asyncio.get_running_loop().create_future()
        self._queue.put(_Message(inbound, future))
        return future

    def write(self, fn: Callable[[SqlTx], T], *, timeout: float | None = None) -> T:
        """Run `fn` in the next group transaction and wait for its commit (a Writer).

        Once the writer has stopped, `fn` runs in a transaction of its own. TimeoutError
        after `timeout` seconds (the write may still be committed later).
        """
        if not self.running:
            return self._store.run(fn)
        future: Future[T] = Future()
        self._queue.put(_Write(fn, future))
        return future.result(timeout)

    def expire(self, session_id: int, fence: Fence | None,
               then: Callable[[datetime | None], None]) -> None:
        """Queue a timeout; after its commit `then` gets the later expiry, if renewed."""
        if not self.running or self._store.postgres:
            # PostgreSQL takes transactions side by side: the job's thread commits the
            # timeout itself instead of queueing behind the webhooks' batches.
            then(self._conversations.expire(session_id, fence=fence))
            return
        self._queue.put(_Expiry(session_id, fence, then))

    def expire_overdue(self, limit: int = 1000) -> Future[int]:
        """Expire overdue sessions in the next round, many per commit.

        Their jobs are the wake-up call, but APScheduler removes each fired job in a
        transaction of its own, a few hundred a second at best: 10k sessions due within
        10 s waited up to 47 s. This scan, run by every worker's overdue loop when the
        next session is due, closes them in batches and drops their jobs. On SQLite it
        joins the next round; on PostgreSQL it runs on the caller's thread, in
        transactions of its own. The future gets how many were expired once committed.
        """
        future: Future[int] = Future()
        if not self.running:
            future.set_result(0)
        elif self._store.postgres:
            # No single writer to wait for: the caller's thread scans in transactions of
            # its own, side by side with the batches (SKIP LOCKED keeps them apart).
            future.set_result(self._scan_apart(limit))
        else:
            self._queue.put(_Scan(limit, future))
        return future

    def _scan_apart(self, limit: int) -> int:
        expired = 0
        while expired < limit:
            chunk = min(_SCAN_CHUNK, limit - expired)
            try:
                with self._store.transaction() as tx:
                    works = self._scan_deferred(DeferredTx(tx), chunk)
            except StoreError as exc:
                if not exc.transient:
                    raise
                log.info("overdue scan lost a conflict with another worker (%s); the next "
                         "scan takes it up", exc)
                break
            self._conversations.finish(works, later=self._issue_later)
            expired += len(works)
            if len(works) < chunk:
                break
        return expired

    def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
        self.running = False
        self._issuer.shutdown(wait=True)

    def _loop(self) -> None:
        while True:
            batch, stopping = self._take()
            if batch:
                self._commit(batch)
            if stopping:
                return

    def _take(self) -> tuple[list[_Item], bool]:
        batch: list[_Item] = []
        item = self._queue.get()
        while True:
            if item is _STOP:
                return batch, True
            assert isinstance(item, _Message | _Write | _Expiry | _Scan)
            batch.append(item)
            if len(batch) >= self._max:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _commit(self, batch: list[_Item]) -> None:
        messages = [item for item in batch if isinstance(item, _Message)]
        writes = [item for item in batch if isinstance(item, _Write)]
        expiries = [item for item in batch if isinstance(item, _Expiry)]
        scans = [item for item in batch if isinstance(item, _Scan)]
        try:
            outcome = self._transact(messages, writes, expiries, scans)
        except BaseException as exc:
            self._fail(messages, writes, expiries, scans, exc)
            if not isinstance(exc, Exception):
                raise
            return
        works, done, expired, swept = outcome
        for write, (result, error) in zip(writes, done, strict=True):
            if error is None:
                write.future.set_result(result)
            else:
                write.future.set_exception(error)
        # A timeout of a session waiting for credentials resumes the issue (off this
        # thread), instead of closing it.
        self._conversations.finish([r[0] for r, _ in expired if r is not None] + swept,
                                   later=self._issue_later)
        for expiry, (result, error) in zip(expiries, expired, strict=True):
            self._after_expiry(expiry, None if error else result[1])
        for scan in scans:
            scan.future.set_result(len(swept))
        replies = self._conversations.finish(works, later=self._issue_later)
        _settle(messages, replies, None)

    def _transact(self, messages: list[_Message], writes: list[_Write],
                  expiries: list[_Expiry], scans: list[_Scan]) -> Any:
        """The batch's one transaction, run again when it lost a conflict with another
        worker (a deadlock or serialisation failure): nothing was committed or told."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._store.transaction() as tx:
                    # Messages first: they take their conversations' locks before anything
                    # else in the transaction holds a lock (see SqlTx.lock_conversations).
                    works = self._conversations.run_batch(tx, [m.inbound for m in messages])
                    done = [self._apply(tx, write.fn) for write in writes]
                    for fence in {e.fence for e in expiries if e.fence is not None}:
                        tx.holds(fence)  # once per batch, not once per timeout
                    expired = [self._apply(tx, functools.partial(
                        self._conversations.expire_in, session_id=e.session_id, fence=e.fence))
                        for e in expiries]
                    swept = self._scan(tx, scans[0].limit) if scans else []
                return works, done, expired, swept
            except StoreError as exc:
                if not exc.transient or attempt == _ATTEMPTS:
                    raise
                log.warning("writer: batch lost a conflict with another worker (%s); "
                            "retrying (%d/%d)", exc, attempt, _ATTEMPTS - 1)
                time.sleep(_RETRY_PAUSE * attempt * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    def _scan(self, tx: SqlTx, limit: int) -> list[Work]:
        works = []
        for session_id in tx.overdue(self._conversations.clock.now(), limit):
            (result, error) = self._apply(
                tx, functools.partial(self._conversations.expire_in, session_id=session_id))
            if error is None and (result[0].committed.fired or result[0].issue):
                works.append(result[0])
        self._forget(tx, works)
        return works

    def _scan_deferred(self, tx: DeferredTx, limit: int) -> list[Work]:
        """`_scan` on PostgreSQL: one statement reads and locks the sessions, their writes
        leave together (persistence.deferred)."""
        sessions = tx.lock_overdue(self._conversations.clock.now(), limit)
        if not sessions:
            return []
        tx.reserve_ids(len(sessions))
        works = []
        for session in sessions:
            mark = tx.mark()
            try:
                work, _later = self._conversations.expire_locked(tx, session)
            except StoreError:
                raise
            except Exception as exc:
                tx.undo(mark)
                log.error("timeout of session %s failed; left open: %s: %s", session.id,
                          type(exc).__name__, exc)
                continue
            if work.committed.fired or work.issue:
                works.append(work)
        tx.flush()
        self._forget(tx, works)
        return works

    def _forget(self, tx: SqlTx, works: list[Work]) -> None:
        """Drop the jobs of the sessions a scan closed, in its transaction. Otherwise each
        job still fires, finds its session closed, and is removed in a transaction of its
        own: two more per timeout, for nothing. Only the closed ones: a state's own
        timeout may move a session on, and its job then re-arms."""
        closed = [s.id for w in works for s in w.committed.closed]
        if closed and self.forget_jobs is not None:
            self.forget_jobs(tx, closed)

    @staticmethod
    def _after_expiry(expiry: _Expiry, later: datetime | None) -> None:
        try:
            expiry.then(later)
        except Exception:
            log.exception("re-arming the timeout of session %s failed; the sweep will",
                          expiry.session_id)

    def _fail(self, messages: list[_Message], writes: list[_Write], expiries: list[_Expiry],
              scans: list[_Scan], exc: BaseException) -> None:
        _settle(messages, [None] * len(messages), exc)
        for write in writes:
            write.future.set_exception(exc)
        for scan in scans:
            scan.future.set_exception(exc)
        if expiries:
            # APScheduler fires the job again while its row stays (the removal failed as
            # well), or the sweep expires the session once the job is gone.
            ids = ", ".join(str(e.session_id) for e in expiries[:20])
            log.error("timeout job for session(s) %s failed: not committed (%s)", ids, exc)

    @staticmethod
    def _apply(tx: SqlTx, fn: Callable[[SqlTx], Any]) -> tuple[Any, BaseException | None]:
        try:
            with tx.savepoint():
                return fn(tx), None
        except StoreError:
            raise  # the database itself refused: the whole batch fails
        except Exception as exc:
            return None, exc

    def resume_issues(self, sessions: list[SessionRecord]) -> None:
        """Issue again, off this thread, for sessions a crash left mid-issue."""
        self._conversations.resume(sessions, later=self._issue_later)

    def _issue_later(self, task: Callable[[], object]) -> None:
        def run() -> None:
            try:
                task()
            except Exception:
                log.exception("issuing credentials failed after the commit")

        self._issuer.submit(run)


def _settle(messages: list[_Message], results: list[Any], exc: BaseException | None) -> None:
    """Resolve the webhooks' futures: one wake-up of each event loop per batch, where a
    thread-safe future per message cost the loop a lock and a callback chain each."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
    for message, result in zip(messages, results, strict=True):
        by_loop.setdefault(message.future.get_loop(), []).append((message.future, result))
    for loop, items in by_loop.items():
        # A closed loop raises RuntimeError: nobody is waiting for these answers any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, items, exc)


def _resolve(items: list[tuple[asyncio.Future[Any], Any]], exc: BaseException | None) -> None:
    for future, result in items:
        if future.done():
            continue  # the client went away and its request was cancelled
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)
