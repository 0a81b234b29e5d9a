"""One running process: the engine plus its scheduler, outbox dispatcher and monitoring.

`serve` and `chat` both run one. Whoever holds the scheduler lock runs the jobs and the
dispatcher; the others only write rows and jobs, and take over if the holder goes away.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from engine.channels.twilio import TwilioSender
from engine.core.clock import Clock
from engine.core.ports import CredentialProvider
from engine.monitoring.metrics import Metrics, lifecycle_logger, stats_block
from engine.outbox.dispatcher import Dispatcher, Sender
from engine.scheduling.lock import SchedulerLock
from engine.scheduling.timeouts import Timeouts, sweep
from engine.server.writer import Writer
from engine.settings import Settings
from engine.wiring import Wiring, wire
from persistence.db import make_engine, sqlite_path

__all__ = ["Worker"]

log = logging.getLogger("tertulia")
_TAKEOVER_SECONDS = 1.0
_OVERDUE_SECONDS = 1.0


class Worker:
    def __init__(
        self, settings: Settings, *, clock: Clock | None = None,
        provider: CredentialProvider | None = None, stats: bool = False,
    ) -> None:
        self.settings = settings
        self.wiring: Wiring = wire(settings, clock=clock, provider=provider)
        self.conversations = self.wiring.conversations
        self.store = self.wiring.store
        self.metrics = Metrics(self.store, close_reasons=self.wiring.flows.close_reasons())
        self._jobs_db = make_engine(settings.database_url, synchronous=settings.sqlite_synchronous,
                                    immediate=False)
        self.writer = Writer(self.conversations, self.store)
        self.timeouts = Timeouts(
            self.conversations, self._jobs_db, warning=settings.session_warning,
            rearm_on_message=settings.timeout_rearm == "message",
            on_tick=self._tick, batch=self.writer.expire,
        )
        self.dispatcher = Dispatcher(
            self.store, self.wiring.clock, sender_factory=self._sender_factory(),
            max_attempts=settings.outbox_max_attempts, max_mps=settings.twilio_max_mps,
            on_result=self.metrics.on_outbox, write=self.writer.write,
        )
        self.lock = SchedulerLock(_lock_path(settings.database_url))
        for listener in (self.timeouts.on_commit, self.dispatcher.on_commit,
                         self.metrics.on_commit, lifecycle_logger):
            self.conversations.subscribe(listener)
        self._stop = threading.Event()
        self._stats = stats
        self._threads: list[threading.Thread] = []

    @property
    def holder(self) -> bool:
        return self.timeouts.active

    def _sender_factory(self) -> Callable[[], Sender] | None:
        s = self.settings
        if s.dry_run:
            return None
        assert s.twilio_account_sid and s.twilio_auth_token and s.twilio_whatsapp_from
        callback = f"{s.public_base_url}/twilio/status" if s.public_base_url else None
        sid, token, sender = s.twilio_account_sid, s.twilio_auth_token.reveal(), \
            s.twilio_whatsapp_from
        return lambda: TwilioSender(
            account_sid=sid, auth_token=token, sender=sender,
            api_base_url=s.twilio_api_base_url, timeout=s.twilio_http_timeout_seconds,
            status_callback=callback,
        )

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler (running jobs only if we get the lock) and the loops."""
        self.writer.start()
        holder = self.lock.try_acquire()
        self.timeouts.start(run_jobs=holder)
        if holder:
            self._become_holder()
        else:
            log.info("another process holds the scheduler lock; this one only writes rows "
                     "and takes over if it stops")
            self._spawn(self._wait_for_lock, "takeover")
        if self._stats:
            self._spawn(self._stats_loop, "stats")

    def _become_holder(self) -> None:
        if not self.timeouts.active:
            self.timeouts.take_over()
        sweep(self.timeouts, self.store)  # once at start, before serving
        self.dispatcher.start()
        self._spawn(self._sweep_loop, "sweep")
        self._spawn(self._overdue_loop, "overdue")

    def _wait_for_lock(self) -> None:
        while not self._stop.wait(_TAKEOVER_SECONDS):
            if self.lock.try_acquire():
                log.info("took over the scheduler lock")
                self._become_holder()
                return

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.settings.sweep_interval_seconds):
            try:
                sweep(self.timeouts, self.store)
            except Exception:
                log.exception("sweep failed; it runs again in %s s",
                              self.settings.sweep_interval_seconds)

    def _stats_loop(self) -> None:
        while not self._stop.wait(self.settings.stats_interval_seconds):
            self.log_stats()

    def log_stats(self) -> None:
        try:
            log.info("%s", stats_block(self.store, self.wiring.clock.now(),
                                       self.settings.session_timeout))
        except Exception:
            log.exception("stats block failed")

    def _tick(self) -> None:
        # The heartbeat also nudges the dispatcher to look for rows other processes wrote.
        self.dispatcher.wake()

    def _overdue_loop(self) -> None:
        # Our own thread, not an APScheduler job: when thousands of timeouts come due at
        # once, the scheduler's thread is busy removing their jobs one by one.
        while not self._stop.wait(_OVERDUE_SECONDS):
            self.writer.expire_overdue()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, flush_seconds: float = 5.0) -> None:
        """Scheduler down without running pending jobs, a bounded outbox flush, dispose."""
        self._stop.set()
        self.timeouts.shutdown()
        if self.dispatcher.running:
            self.dispatcher.stop(flush_seconds)
        self.writer.stop()
        for thread in self._threads:
            thread.join(timeout=1)
        self.lock.release()
        self._jobs_db.dispose()
        self.wiring.close()


def _lock_path(url: str) -> Path | None:
    path = sqlite_path(url)
    return path.with_name(path.name + ".scheduler.lock") if path is not None else None
