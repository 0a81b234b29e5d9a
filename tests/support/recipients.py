"""FakeTwilio with faults per recipient, for tests with several conversations in flight.

Both override `FakeTwilio.decide(form)`, which receives the parsed request, and pick a
fault by the request's `To`:

- `RecipientFakeTwilio`: statuses scripted per recipient (`script_for`).
- `SeededFaultsFake`: probabilistic faults drawn from one seeded RNG per recipient.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from tests.support.harness import whatsapp
from tests.support.twilio_fake import Decision, FakeTwilio, default_error_code

__all__ = ["RecipientFakeTwilio", "SeededFaultsFake"]

Rates = tuple[float, float, float, float, int]


class RecipientFakeTwilio(FakeTwilio):
    """FakeTwilio plus fault scripts per recipient (`To`), for concurrent conversations.

    `FakeTwilio.script` is one queue for every request, so with two recipients in
    flight nobody can say which message gets which fault. `script_for(to, ...)` queues
    statuses that only requests to `to` consume, in order; they take precedence over
    the shared faults. Everything else is FakeTwilio's own behaviour.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._per_to: dict[str, list[tuple[int, int | None]]] = {}

    def script_for(self, to: str, *statuses: int) -> None:
        """Queue statuses (201 = answer normally) for the next requests to `to`."""
        with self._lock:
            self._per_to.setdefault(whatsapp(to), []).extend((s, None) for s in statuses)

    def script_error_for(self, to: str, status: int, code: int) -> None:
        """Queue one error answer with an explicit Twilio code for `to`."""
        with self._lock:
            self._per_to.setdefault(whatsapp(to), []).append((status, code))

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._per_to.clear()

    def decide(self, form: Mapping[str, str]) -> Decision:
        with self._lock:
            queue = self._per_to.get(form.get("To", ""))
            picked = queue.pop(0) if queue else None
            delay = self._latency
        if picked is None:
            return super().decide(form)
        status, code = picked
        if code is None and status != 201:
            code = default_error_code(status)
        return Decision(status, code, delay)


class SeededFaultsFake(RecipientFakeTwilio):
    """FakeTwilio whose probabilistic faults are drawn from one seeded RNG per recipient.

    `FakeTwilio.fail_rates` draws every request's fault from one shared RNG, so with
    several recipients in flight which row gets which fault depends on thread timing,
    and once in a while one row collects six or seven failures in a row: with the
    dispatcher's exponential backoff that alone costs one to two minutes. Here each
    recipient's requests draw from `Random(f"{seed}:{to}")`, with exactly the shared
    RNG's semantics (500 with `error_500`, else 429 with `error_429`; independently an
    extra `slow_seconds` with `slow`). A recipient's requests are sequential (the
    outbox keeps order per recipient), so its sequence of outcomes depends on the seed
    only, and `outcomes(to, n)` predicts it. Scripted statuses still come first.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rates: Rates | None = None
        self._rngs: dict[str, random.Random] = {}

    def recipient_fail_rates(self, error_500: float, error_429: float, slow: float,
                             slow_seconds: float, seed: int) -> None:
        with self._lock:
            self._rates = (error_500, error_429, slow, slow_seconds, seed)
            self._rngs.clear()

    @staticmethod
    def draw(rng: random.Random, rates: Rates) -> tuple[int, bool]:
        """(status, slow) of one request, as FakeTwilio.decide draws them."""
        p500, p429, p_slow, _, _ = rates
        status = 201
        r = rng.random()
        if r < p500:
            status = 500
        elif r < p500 + p429:
            status = 429
        return status, rng.random() < p_slow

    def outcomes(self, to: str, n: int) -> list[tuple[int, bool]]:
        assert self._rates is not None
        rng = random.Random(f"{self._rates[4]}:{to}")
        return [self.draw(rng, self._rates) for _ in range(n)]

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._rates = None
            self._rngs.clear()

    def decide(self, form: Mapping[str, str]) -> Decision:
        to = form.get("To", "")
        with self._lock:
            rates = self._rates
            scripted = bool(self._per_to.get(to)) or bool(self._script)
            if rates is not None and not scripted:
                rng = self._rngs.setdefault(to, random.Random(f"{rates[4]}:{to}"))
                status, slow = self.draw(rng, rates)
                delay = self._latency + (rates[3] if slow else 0.0)
                code = None if status == 201 else default_error_code(status)
                return Decision(status, code, delay)
        return super().decide(form)
