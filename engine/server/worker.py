"""One worker process: the conversations plus the writer, the timers, the outbox
dispatcher and monitoring.

Any number of identical workers may share one database, on one machine or several;
the database is their only coordinator:
- every worker takes webhooks (the store serialises each conversation), sends from the
  outbox (claims with a lease) and runs the overdue scan (the safety net);
- one worker at a time, the holder of the scheduler lease, runs APScheduler's jobs and
  the sweep; the others only write jobs, and one of them takes the lease over within
  SCHEDULER_LEASE_SECONDS when the holder dies or freezes.
`serve`, `chat` and every `serve --workers N` child run one each.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from engine.channels.twilio import TwilioSender
from engine.core.clock import Clock
from engine.core.conversations import WHATSAPP_WINDOW
from engine.core.pinning import stale_sessions
from engine.core.ports import CredentialProvider
from engine.monitoring.metrics import Metrics, lifecycle_logger, stats_block
from engine.outbox.dispatcher import Dispatcher, Sender
from engine.scheduling.lease import Lease
from engine.scheduling.timeouts import POSTGRES_JOB_GRACE, Timeouts, sweep
from engine.server.health import StorageProbe
from engine.server.writer import Writer
from engine.settings import Settings
from engine.wiring import Wiring, wire
from persistence import outbox, queries
from persistence.db import make_engine

__all__ = ["Worker", "worker_id"]

log = logging.getLogger("tertulia")
_LEASE_SECONDS = 1.0  # how often the lease is renewed, and the threads looked at
_SCAN_IDLE = 1.0  # the overdue scan's longest sleep when nothing is due
_SCAN_MIN = 0.02


def worker_id() -> str:
    """Unique among workers on every machine, and readable in the tables."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Worker:
    def __init__(
        self, settings: Settings, *, clock: Clock | None = None,
        provider: CredentialProvider | None = None, stats: bool = False,
    ) -> None:
        self.settings = settings
        self.id = worker_id()
        self.wiring: Wiring = wire(settings, clock=clock, provider=provider)
        self.conversations = self.wiring.conversations
        self.store = self.wiring.store
        self.clock = self.wiring.clock
        self.metrics = Metrics(self.store, close_reasons=self.wiring.flows.close_reasons())
        self._jobs_db = make_engine(settings.database_url, synchronous=settings.sqlite_synchronous,
                                    immediate=False)
        self.writer = Writer(self.conversations, self.store)
        self.storage = StorageProbe(self.writer, self.store, self.clock.now)
        self.lease = Lease(self.store, holder=self.id, ttl_seconds=settings.scheduler_lease_seconds)
        self.timeouts = Timeouts(
            self.conversations, self._jobs_db, warning=settings.session_warning,
            rearm_on_message=settings.timeout_rearm == "message",
            on_tick=self._tick, batch=self.writer.expire, fence=self.lease.fence,
            grace=POSTGRES_JOB_GRACE if self.store.postgres else timedelta(0),
        )
        self.writer.forget_jobs = self.timeouts.forget_in
        self.dispatcher = Dispatcher(
            self.store, self.clock, sender_factory=self._sender_factory(),
            max_attempts=settings.outbox_max_attempts, max_mps=settings.twilio_max_mps,
            on_result=self.metrics.on_outbox, write=self._outbox_runner(),
            worker=self.id, claim_seconds=settings.outbox_claim_seconds,
            sender_key=settings.twilio_whatsapp_from or "dry-run",
        )
        for listener in (self.timeouts.on_commit, self.dispatcher.on_commit,
                         self.metrics.on_commit, lifecycle_logger):
            self.conversations.subscribe(listener)
        self._stop = threading.Event()
        self._stats = stats
        self._threads: dict[str, tuple[Callable[[], None], threading.Thread]] = {}
        self._failed: list[str] = []

    @property
    def holder(self) -> bool:
        """Whether this worker holds the scheduler lease and runs the jobs."""
        return self.timeouts.active and self.lease.held

    def _outbox_runner(self) -> Any:
        # SQLite takes one writer at a time: the outbox's bookkeeping joins the writer's
        # batches. PostgreSQL takes them side by side, and the shared rows the outbox
        # touches (its claims, the send slots) must not wait for a batch to commit.
        return self.store.run if self.store.postgres else self.writer.write

    def _sender_factory(self) -> Callable[[], Sender] | None:
        s = self.settings
        if s.dry_run:
            return None
        assert s.twilio_account_sid and s.twilio_auth_token and s.twilio_whatsapp_from
        callback = f"{s.public_base_url}/twilio/status" if s.public_base_url else None
        sid = s.twilio_account_sid
        token = s.twilio_auth_token.reveal()
        sender = s.twilio_whatsapp_from
        return lambda: TwilioSender(
            account_sid=sid, auth_token=token, sender=sender,
            api_base_url=s.twilio_api_base_url, timeout=s.twilio_http_timeout_seconds,
            status_callback=callback, content_sids=s.twilio_content_sids,
        )

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start every loop; take the scheduler lease if it is free (sweeping once before
        serving, as the holder does at every takeover)."""
        for line in stale_sessions(self.wiring.flows, queries.open_by_flow(self.store)):
            log.warning(line)
        if self.store.sealer.ephemeral:
            log.warning("CREDENTIALS_KEY is unset: credentials messages are sealed with a "
                        "key that lives in this process only; one still unsent at a crash "
                        "is given up after the restart, and its user may ask again")
        self.writer.start()
        self._resume_issues()
        self.timeouts.start(run_jobs=False)
        if self.lease.renew():
            self._take_over()
        else:
            log.info("worker %s: another worker holds the scheduler lease; this one takes "
                     "webhooks, sends and scans, and takes the lease over if it lapses",
                     self.id)
        self.dispatcher.start()
        self._spawn("lease", self._lease_loop)
        self._spawn("overdue", self._overdue_loop)
        self._spawn("sweep", self._sweep_loop)
        if self._stats:
            self._spawn("stats", self._stats_loop)

    def _resume_issues(self) -> None:
        """Sessions a crash left mid-issue get their credentials now, not an inactivity
        notice at their timeout. Every worker does it at its start: the provider is keyed
        by session and only one delivery commits, so a second ask costs nothing more."""
        states = {flow.name: flow.credentials_state for flow in self.wiring.flows
                  if flow.credentials_state is not None}
        waiting = queries.awaiting_credentials(self.store, states) if states else []
        if waiting:
            log.warning("worker %s: resuming the credentials of %d session(s) a stop left "
                        "mid-issue", self.id, len(waiting))
            self.writer.resume_issues(waiting)

    def _take_over(self) -> None:
        log.info("worker %s holds the scheduler lease (token %s)", self.id,
                 self.lease.describe()["token"])
        self._sweep()
        self.timeouts.take_over()

    def _step_down(self, why: str) -> None:
        log.warning("worker %s: %s; stops running the scheduler's jobs", self.id, why)
        self.timeouts.pause()

    def _lease_loop(self) -> None:
        while not self._stop.wait(_LEASE_SECONDS):
            if "scheduler" in self._failed:
                continue  # no scheduler to run: leave the lease to the other workers
            was = self.timeouts.active
            held = self.lease.renew()
            if self._stop.is_set():
                return  # stopping: a lease taken now would be given up at once, or kept
            if held and not was:
                self._take_over()
            elif was and not held:
                self._step_down("lost the scheduler lease")
            self._supervise()

    def _supervise(self) -> None:
        """Restart a loop thread that died; give the lease up if the scheduler's died."""
        if self._stop.is_set():
            return  # threads end and the scheduler stops on purpose while stopping
        for name, (target, thread) in list(self._threads.items()):
            if not thread.is_alive() and not self._stop.is_set():
                log.error("worker %s: thread %r died; restarting it", self.id, name)
                self._spawn(name, target)
        if self.timeouts.active and not self.timeouts.thread_alive():
            self._failed.append("scheduler")
            self._step_down("the scheduler's thread died")
            self.lease.release()

    def _overdue_loop(self) -> None:
        # Every worker: the safety net that closes what is past due however the jobs
        # fare, many per commit. It wakes when the next session is due, so a timeout is
        # closed within a few tens of milliseconds even when its job is late or lost.
        while not self._stop.is_set():
            try:
                pause = self._expire_overdue()
            except Exception:
                log.exception("overdue scan failed; again in %s s", _SCAN_IDLE)
                pause = _SCAN_IDLE
            self._stop.wait(pause)

    def _expire_overdue(self) -> float:
        due = queries.next_expiry(self.store)
        now = self.clock.now()
        if due is None or due > now:
            return _until(due, now)
        expired = self.writer.expire_overdue().result(timeout=60)
        return 0.0 if expired else _SCAN_MIN * 5

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.settings.sweep_interval_seconds):
            if self.holder:
                self._sweep()

    def _sweep(self) -> None:
        try:
            sweep(self.timeouts, self.store)
            # Sealed credentials no callback ever settled: past the window nothing can be
            # sent again, so even their ciphertext goes.
            before = self.clock.now() - WHATSAPP_WINDOW
            self.writer.write(lambda tx: outbox.forget_sealed(tx, sent_before=before))
        except Exception:
            log.exception("sweep failed; it runs again in %s s",
                          self.settings.sweep_interval_seconds)

    def _stats_loop(self) -> None:
        while not self._stop.wait(self.settings.stats_interval_seconds):
            self.log_stats()

    def log_stats(self) -> None:
        try:
            log.info("%s", stats_block(self.store, self.clock.now(),
                                       self.settings.session_timeout))
        except Exception:
            log.exception("stats block failed")

    def _tick(self) -> None:
        # The heartbeat also nudges the dispatcher to look for rows other workers wrote.
        self.dispatcher.wake()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads[name] = (target, thread)

    # -- health --------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """This worker's true role and whether every thread it needs is alive."""
        threads = {name: thread.is_alive() for name, (_t, thread) in self._threads.items()}
        threads["writer"] = self.writer.alive
        threads["dispatcher"] = self.dispatcher.alive
        if self.timeouts.active:
            threads["scheduler"] = self.timeouts.thread_alive()
        dead = sorted(name for name, alive in threads.items() if not alive)
        return {
            "worker": self.id,
            "scheduler": "active" if self.holder else "standby",
            "lease": self.lease.describe(),
            "threads": threads,
            "failed": sorted(set(self._failed) | set(dead)),
            "ok": not dead and not self._failed,
        }

    def stop(self, flush_seconds: float = 5.0) -> None:
        """Scheduler down without running pending jobs, a bounded outbox flush, the lease
        given up for the next worker, dispose."""
        self._stop.set()
        # The loop threads first: the lease loop must not take the lease over, or report
        # the scheduler dead, once the scheduler below is shut down.
        for _target, thread in self._threads.values():
            thread.join(timeout=2)
        self.timeouts.shutdown()
        self.lease.release()
        if self.dispatcher.running:
            self.dispatcher.stop(flush_seconds)
        self.writer.stop()
        self._jobs_db.dispose()
        self.wiring.close()


def _until(due: datetime | None, now: datetime) -> float:
    if due is None:
        return _SCAN_IDLE
    left = (due - now) / timedelta(seconds=1)
    return min(_SCAN_IDLE, max(_SCAN_MIN, left))
