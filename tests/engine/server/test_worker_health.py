"""A worker tells the truth about itself: its role, and a thread it needs that died."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.server.worker import Worker
from tests.support.harness import wait_until
from tests.support.wiring import make_settings, rows


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    started = Worker(make_settings(tmp_path, SCHEDULER_LEASE_SECONDS="2"))
    started.start()
    yield started
    started.stop(flush_seconds=0.1)


def test_a_lone_worker_holds_the_lease_and_says_so(worker: Worker) -> None:
    health = worker.health()
    assert health["ok"] is True and health["failed"] == []
    assert health["scheduler"] == "active"
    assert health["lease"]["held"] is True and health["lease"]["token"] >= 1
    assert all(health["threads"].values()), health["threads"]
    [lease] = rows(worker.wiring, "SELECT holder, token FROM leases WHERE name = 'scheduler'")
    assert lease["holder"] == worker.id


def test_a_dead_scheduler_thread_makes_the_worker_unhealthy_and_frees_the_lease(
    worker: Worker,
) -> None:
    # APScheduler's own shutdown ends its thread, as the JobLookupError crash used to.
    worker.timeouts.scheduler.shutdown(wait=True)
    wait_until(lambda: not worker.health()["ok"], 5, "the worker to report the dead thread")
    wait_until(lambda: worker.health()["scheduler"] == "standby", 5, "the worker to step down")
    health = worker.health()
    assert "scheduler" in health["failed"]
    assert health["scheduler"] == "standby"
    [lease] = rows(worker.wiring, "SELECT holder FROM leases WHERE name = 'scheduler'")
    assert lease["holder"] is None, "given up at once for another worker to take"
    wait_until(lambda: worker.health()["lease"]["held"] is False, 5, "the lease given up")


def test_a_stopping_worker_never_takes_the_lease_over_nor_reports_its_scheduler_dead(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # Found by the workers bench: with two workers stopping together, the one without the
    # lease took it over after its own scheduler was shut down (SchedulerNotRunningError
    # in its lease thread), or reported the scheduler's thread as dead.
    holder = Worker(make_settings(tmp_path, SCHEDULER_LEASE_SECONDS="2"))
    standby = Worker(make_settings(tmp_path, SCHEDULER_LEASE_SECONDS="2"))
    holder.start()
    standby.start()
    assert standby.health()["scheduler"] == "standby"
    # The standby's scheduler is already down when the lease comes free: what it sees
    # while it is stopping.
    standby.timeouts.shutdown()
    standby.timeouts.take_over()  # must be a no-op now, not SchedulerNotRunningError
    holder.stop(flush_seconds=0.1)
    standby.stop(flush_seconds=0.1)
    lines = [r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert not [line for line in lines if "scheduler" in line], lines
    assert not [r for r in caplog.records if r.exc_info], "no traceback while stopping"
    [lease] = rows(holder.wiring, "SELECT holder FROM leases WHERE name = 'scheduler'")
    assert lease["holder"] is None, "nobody keeps a lease on the way out"
