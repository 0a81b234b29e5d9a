"""The outbox pacer's schedule, on a fake clock: spacing, the 1 s window, idle time."""

from __future__ import annotations

import itertools

from engine.outbox.dispatcher import Pacer


class FakeTime:
    """A monotonic clock that only moves when someone sleeps or a test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def busiest_window(slots: list[float], window: float = 1.0) -> int:
    start, best = 0, 0
    for end, t in enumerate(slots):
        while t - slots[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_a_backlog_is_sent_one_interval_apart_and_never_above_the_rate() -> None:
    clock = FakeTime()
    pacer = Pacer(80, monotonic=clock.monotonic, sleep=clock.sleep)
    slots = [pacer.wait() for _ in range(400)]
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) >= 1 / 80 - 1e-9
    assert busiest_window(slots) == 80
    # The slack is the only slowdown: 400 sends take 5 s and a few hundredths, not more.
    assert slots[-1] - slots[0] < 399 / 80 + 5 * 0.021


def test_callers_that_come_a_little_late_do_not_lower_the_rate() -> None:
    # One sender thread that needs 5 ms, then 18 ms, between its sends: 11.5 ms on
    # average, under the 12.5 ms interval, but late for every other slot.
    clock = FakeTime()
    pacer = Pacer(80, monotonic=clock.monotonic, sleep=clock.sleep)
    slots = []
    for n in range(400):
        slots.append(pacer.wait())
        clock.now += 0.005 if n % 2 else 0.018
    assert busiest_window(slots) <= 80
    assert slots[-1] - slots[0] < 399 / 80 + 5 * 0.021


def test_late_callers_never_bunch_into_one_second_above_the_rate() -> None:
    # Threads that arrive late (a burst after a stall) must not use up the slots they
    # missed: the window of the last `rate` slots holds them back.
    clock = FakeTime()
    pacer = Pacer(10, monotonic=clock.monotonic, sleep=clock.sleep)
    slots = [pacer.wait() for _ in range(5)]
    clock.now += 0.35  # a stall: nobody asked for the next few slots
    slots += [pacer.wait() for _ in range(30)]
    assert busiest_window(slots) <= 10


def test_a_send_that_reaches_the_wire_late_by_less_than_the_slack_stays_within_the_rate(
) -> None:
    clock = FakeTime()
    pacer = Pacer(10, monotonic=clock.monotonic, sleep=clock.sleep)  # the default slack
    slots = [pacer.wait() for _ in range(40)]
    for late in range(len(slots)):
        arrivals = sorted(s + (0.0099 if i == late else 0.0) for i, s in enumerate(slots))
        assert busiest_window(arrivals) <= 10, f"send {late} arriving 9.9 ms late"


def test_an_idle_pacer_lets_the_next_send_go_at_once() -> None:
    clock = FakeTime()
    pacer = Pacer(80, monotonic=clock.monotonic, sleep=clock.sleep)
    pacer.wait()
    clock.now += 5.0
    before = clock.now
    assert pacer.wait() == before
