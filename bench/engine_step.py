"""The engine's own cost per message, in this process, with no HTTP and no threads.

The webhook server is bound by one core (one GIL): whatever it spends per request caps
its throughput. This times the part no web stack can take away: the group-commit
writer running batches of 32 "mmm" messages to open sessions (the webhook benchmark's
load) through the real Engine, the real SqlStore on a SQLite file in a temp dir, and
the trial flow, the commit included. The listeners that serve adds (timeouts, outbox,
metrics, log lines) are left out, so this is a lower bound of the writer's share.

    python -m bench.engine_step        # prints microseconds per message
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from engine.core.ports import Inbound
from engine.server.writer import Writer, _Message
from engine.settings import Settings
from engine.wiring import wire
from persistence.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
_PHONES, _BATCH = 1024, 32


def measure(rounds: int = 3) -> float:
    """Best of `rounds` passes over every phone, in microseconds per message."""
    with tempfile.TemporaryDirectory(prefix="tertulia-bench-engine-") as tmp:
        url = f"sqlite:///{tmp}/engine.db"
        upgrade(url)
        settings = Settings.from_mapping({"DATABASE_URL": url, "FLOWS_DIR": str(ROOT / "flows"),
                                          "SESSION_TIMEOUT_MINUTES": "600"})
        wiring = wire(settings)
        writer = Writer(wiring.conversations, wiring.store)
        loop = asyncio.new_event_loop()
        counter = iter(range(10**9))

        def one_pass(text: str) -> float:
            started = time.perf_counter()
            for first in range(0, _PHONES, _BATCH):
                writer._commit([
                    _Message(Inbound("whatsapp", f"+1555{p:07d}", text,
                                     f"SM{next(counter):032d}"), loop.create_future())
                    for p in range(first, first + _BATCH)
                ])
            elapsed = time.perf_counter() - started
            loop.run_until_complete(asyncio.sleep(0))  # settle the futures, untimed
            return elapsed

        one_pass("hola")
        one_pass("mmm")  # warm-up
        best = min(one_pass("mmm") for _ in range(rounds))
        loop.close()
        wiring.store.db.dispose()
    return 1e6 * best / _PHONES


if __name__ == "__main__":
    print(f"engine step, in process: {measure():.0f} us per message")
