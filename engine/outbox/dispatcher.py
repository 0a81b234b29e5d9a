"""The outbound dispatcher: sends the outbox's WhatsApp rows through Twilio.

Order holds per recipient (a recipient's next row waits for its head), recipients are
sent in parallel, the sender is paced at TWILIO_MAX_MPS, and failures back off with
jitter. It wakes at once when the engine queues a row and polls every second for rows
other processes wrote.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Protocol

from engine.channels.twilio import SendFailure, SendResult
from engine.core.choices import Choice, numbered
from engine.core.clock import Clock
from engine.core.conversations import WHATSAPP_WINDOW
from engine.core.errors import ClaimLost, StoreError
from engine.core.unit import Committed
from engine.outbox.pacing import SharedPacer
from persistence import outbox
from persistence.store import SqlStore, TxRunner

__all__ = ["Dispatcher", "Sender", "backoff"]

log = logging.getLogger("tertulia.outbox")
CHANNEL = "whatsapp"
POLL_SECONDS = 1.0
# Sender threads. Most wait for their pacer slot; while a flood of webhooks keeps the
# writer's commits long, some also wait for their `record_sent`. With 16, every one of
# them was sometimes waiting on the writer and slots went by unused (stalls of up to
# 425 ms, 76.6-77.9 sends/s in the outbox bench); with 32, none: 78.4/s, the ceiling.
WORKERS = 32
_BACKOFF_CAP = 60.0
_COALESCE_SECONDS = 0.005
_RECORD_PATIENCE = 60.0


class Sender(Protocol):
    def send(self, phone: str, body: str, pace: Callable[[], object],
             choices: Sequence[Choice] = (), key: str | None = None) -> SendResult:
        """Send; call `pace` once, as late as possible before the request leaves.
        `choices` are the text's, `key` its "flow.text" (engine.channels.twilio)."""

    def close(self) -> None: ...


_JITTER = random.Random()


def backoff(failures: int) -> float:
    """Seconds before the next try: about 1 s, then doubling, capped at 60, with jitter."""
    return min(_BACKOFF_CAP, 2.0 ** (failures - 1)) * _JITTER.uniform(0.5, 1.0)


def _dead_here(worker: str) -> bool:
    """Whether `worker` (an id from engine.server.worker.worker_id: host:pid:tag) ran on
    this machine and its process no longer exists. A reused pid reads as alive: then
    its claim is waited out, the safe way to be wrong."""
    host, _, rest = worker.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Dispatcher:
    """One per worker; `sender_factory` None means dry run."""

    def __init__(
        self, store: SqlStore, clock: Clock, *, sender_factory: Callable[[], Sender] | None,
        max_attempts: int, max_mps: float, workers: int = WORKERS,
        on_result: Callable[[str], None] = lambda outcome: None, write: TxRunner | None = None,
        worker: str = "solo", claim_seconds: float = 60.0, sender_key: str = "default",
    ) -> None:
        self._store = store
        self._clock = clock
        self._factory = sender_factory
        # Bookkeeping goes through the process's single writer when it has one, so it
        # never queues for the write lock against the webhooks' transactions.
        self._write: TxRunner = write or store.run
        self._worker = worker
        self._claim = timedelta(seconds=claim_seconds)
        self._sender_key = sender_key
        self._max_attempts = max_attempts
        self._pacer = SharedPacer(max_mps, self._reserve)
        self._workers, self._on_result = workers, on_result
        self._wake, self._stopping = threading.Event(), threading.Event()
        # Rows in flight in this worker. The claim itself keeps a recipient's next row
        # back until this one is recorded, so these only say how many workers are free.
        self._busy: set[int] = set()
        self._busy_lock = threading.Lock()
        self._local = threading.local()
        self._senders: list[Sender] = []
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="outbox")
        self._thread = threading.Thread(target=self._loop, name="outbox", daemon=True)
        self.running = False

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        # Rows a dead worker left `sending` are taken over once their claim lapses
        # (OUTBOX_CLAIM_SECONDS); they may reach the recipient twice, and only they.
        # A worker that died on this machine (a restart after kill -9) need not be
        # waited out: its process is gone, so its rows go back at once.
        for worker in outbox.claimants(self._store, CHANNEL):
            if _dead_here(worker):
                released = outbox.release_claims(self._store, CHANNEL, worker)
                log.warning("outbox: %d message(s) were in flight in worker %s, which is "
                            "gone; sending them again (the recipient may get a duplicate)",
                            released, worker)
        self.running = True
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _reserve(self, now: float, interval: float) -> float | None:
        row_id = self._local.row_id
        until = self._clock.now() + self._claim
        return self._write(lambda tx: outbox.reserve_slot(
            tx, row_id=row_id, worker=self._worker, claim_until=until,
            sender=self._sender_key, now=now, interval=interval))

    def wake(self) -> None:
        self._wake.set()

    def on_commit(self, committed: Committed) -> None:
        """Conversations listener: a new WhatsApp row wakes the loop at once."""
        if any(o.channel == CHANNEL for o in committed.outbound):
            self._wake.set()

    def stop(self, flush_seconds: float = 5.0) -> None:
        """Give in-flight and due rows `flush_seconds`, then stop; the rest stays pending."""
        deadline = time.monotonic() + flush_seconds
        while time.monotonic() < deadline and self.running and self._has_due_work():
            time.sleep(0.05)
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self._pool.shutdown(wait=True, cancel_futures=True)
        outbox.release_claims(self._store, CHANNEL, self._worker)
        for sender in self._senders:
            sender.close()
        self.running = False

    def _has_due_work(self) -> bool:
        with self._busy_lock:
            if self._busy:
                return True
        return outbox.has_due(self._store, channel=CHANNEL, now=self._clock.now())

    # -- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._dispatch_due()
            except Exception:
                log.exception("outbox: dispatch round failed; retrying in %s s", POLL_SECONDS)
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            # Let completions and new rows pile up a little: one claim serves many.
            self._stopping.wait(_COALESCE_SECONDS)

    def _dispatch_due(self) -> None:
        with self._busy_lock:
            free = self._workers * 2 - len(self._busy)
        if free < self._workers:
            # More rows are claimed than there are workers, so none is idle: claim again
            # once that is no longer so, a batch of rows at a time. Claiming after every
            # send (a read and a write each) kept this loop at 0.17-0.20 of a core at 80/s.
            return
        now = self._clock.now()
        heads = self._write(lambda tx: outbox.claim(
            tx, channel=CHANNEL, now=now, worker=self._worker, claim_until=now + self._claim,
            limit=free))
        for row in heads:
            with self._busy_lock:
                self._busy.add(row.id)
            self._pool.submit(self._deliver, row)

    def _deliver(self, row: outbox.OutRow) -> None:
        try:
            self._send_or_settle(row)
        except Exception as exc:
            log.error("outbox: the outcome of message %s could not be recorded (%s); it "
                      "will be sent again", row.id, exc)
        finally:
            with self._busy_lock:
                self._busy.discard(row.id)
            self._wake.set()

    def _send_or_settle(self, row: outbox.OutRow) -> None:
        now = self._clock.now()
        if self._factory is None:
            log.info("DRY RUN to %s: %s", row.phone, numbered(row.log_body, row.choices))
            outbox.record_failure(self._write, row.id, worker=self._worker, status="dry_run",
                                  code=None, now=now, count_attempt=False)
            self._on_result("dry_run")
        elif row.unreadable:
            log.error("outbox: message %s to %s carries credentials sealed with another key "
                      "(CREDENTIALS_KEY changed, or was unset before a restart): given up; "
                      "its user may ask again", row.id, row.phone)
            outbox.record_failure(self._write, row.id, worker=self._worker, status="failed",
                                  code=None, now=now, count_attempt=False)
            self._on_result("failed")
        elif now - row.last_inbound_at > WHATSAPP_WINDOW:
            log.info("outbox: message %s to %s skipped: outside the 24-hour window",
                     row.id, row.phone)
            outbox.record_failure(self._write, row.id, worker=self._worker,
                                  status="skipped_window", code=None, now=now,
                                  count_attempt=False)
            self._on_result("skipped_window")
        else:
            self._send(row)

    def _send(self, row: outbox.OutRow) -> None:
        sender = self._sender()  # built before the slot, or the first sends bunch up
        self._local.row_id = row.id
        try:
            result = sender.send(row.phone, row.body, lambda: self._pacer.wait(row.id),
                                 row.choices, row.key)
        except SendFailure as failure:
            self._failed(row, failure)
            return
        except ClaimLost:
            log.warning("outbox: message %s: this worker's claim lapsed and another worker "
                        "took it over; not sent from here", row.id)
            return
        now = self._clock.now()
        # Twilio has the message now: losing that fact would mean sending it twice.
        self._record(row, lambda: outbox.record_sent(self._write, row.id, worker=self._worker,
                                                     sid=result.sid, status=result.status,
                                                     now=now))
        self._on_result("sent")

    def _failed(self, row: outbox.OutRow, failure: SendFailure) -> None:
        attempts = row.attempts + 1
        if failure.retryable and attempts < self._max_attempts:
            delay = backoff(attempts)
            log.warning("outbox: message %s to %s failed (%s); retry %d in %.1f s",
                        row.id, row.phone, failure, attempts, delay)
            outbox.record_retry(self._write, row.id, worker=self._worker, code=failure.code,
                                next_at=self._clock.now() + timedelta(seconds=delay))
            self._on_result("retry")
            return
        why = f"gave up after {attempts} attempts" if failure.retryable else "permanent error"
        log.error("outbox: message %s to %s failed: %s (%s)", row.id, row.phone, failure, why)
        outbox.record_failure(self._write, row.id, worker=self._worker, status="failed",
                              code=failure.code or failure.status, now=self._clock.now())
        self._on_result("failed")

    def _record(self, row: outbox.OutRow, write: Callable[[], bool]) -> None:
        """Write an outcome, retrying while the database refuses; the recipient stays
        busy meanwhile, so its later messages keep their place behind this one."""
        deadline = time.monotonic() + _RECORD_PATIENCE
        while True:
            try:
                if not write():
                    log.warning("outbox: message %s was sent, but another worker had taken "
                                "it over meanwhile; its outcome is that worker's to record",
                                row.id)
                return
            except StoreError as exc:
                if self._stopping.is_set() or time.monotonic() > deadline:
                    raise
                log.warning("outbox: recording message %s failed (%s); retrying", row.id, exc)
                self._stopping.wait(1.0)

    def _sender(self) -> Sender:
        # twilio's client keeps per-request state: one per worker thread.
        sender: Sender | None = getattr(self._local, "sender", None)
        if sender is None:
            assert self._factory is not None
            sender = self._local.sender = self._factory()
            self._senders.append(sender)
        return sender
