"""Abuse limits on real servers (issue 11, item 3): the per-phone rate holds across two
workers on one database, and a huge "name" is not echoed as dozens of billed messages.

What users receive is read from the Twilio fake; what was stored, from the database.
A reply is queued in the transaction that stores its message, so once a webhook got
its 200, the rows say whether it will ever be answered.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.flow import BASE_TEXTS
from tests.support.harness import Server, ServerFactory, Servers, wait_until, whatsapp
from tests.support.recipients import RecipientFakeTwilio

pytestmark = pytest.mark.e2e

FLOODER = "+5491155801001"
CALM = "+5491155801002"
# Looked up when used: the text a flow may override, and new with issue 11.
SLOW_DOWN_KEY = "slow_down"
E2E_BACKENDS = ("sqlite", "postgres")


def _rows(server: Server, phone: str) -> list[dict[str, object]]:
    return server.rows(
        "SELECT m.id, m.direction, m.body FROM messages m JOIN sessions s "
        "ON s.id = m.session_id WHERE s.phone = ? ORDER BY m.id", (phone,))


def test_the_rate_limit_holds_across_two_workers(
    fake: RecipientFakeTwilio, tmp_path: Path, e2e_backend: str,
) -> None:
    from tests.support.postgres import scratch_database

    limit = 4
    slow_down = BASE_TEXTS.get(SLOW_DOWN_KEY, "(no slow-down text)")
    with (scratch_database() if e2e_backend == "postgres" else _Nothing()) as url:
        env = {"RATE_LIMIT_MESSAGES": str(limit), "RATE_LIMIT_WINDOW_SECONDS": "600"}
        if url:
            env["DATABASE_URL"] = url
        servers = Servers(tmp_path, fake.base_url, env=env)
        try:
            shared = tmp_path / "shared.db"
            one = servers.start(name="worker1", db_path=shared)
            two = servers.start(name="worker2", db_path=shared)
            texts = ["hola", "qué es esto", "no sé", "mmm", "sí", "sí!!", "hola?", "dale"]
            for i, text in enumerate(texts):
                worker = one if i % 2 == 0 else two  # a load balancer's turns
                assert worker.send(FLOODER, text).status_code == 200
            assert one.send(CALM, "hola").status_code == 200

            rows = _rows(one, FLOODER)
            inbound = [r for r in rows if r["direction"] == "in"]
            assert [r["body"] for r in inbound] == texts  # all stored
            replies = [r for r in rows if r["direction"] == "out"]
            # Each of the first four answered; the fifth told to slow down; then nothing.
            assert [r["body"] for r in replies].count(slow_down) == 1
            fifth = inbound[limit]["id"]
            assert all(r["id"] < fifth + 2 for r in replies), replies
            assert replies[-1]["body"] == slow_down
            # Another phone is not held up by the flooder.
            wait_until(lambda: fake.delivered_to(whatsapp(CALM)), 10, "the calm greeting")
            wait_until(lambda: slow_down in fake.delivered_to(whatsapp(FLOODER)), 10,
                       "the slow-down notice")
            assert len(fake.delivered_to(whatsapp(FLOODER))) == len(replies)
        finally:
            problems = servers.close()
    assert problems == []


def test_a_huge_name_is_echoed_in_one_message(
    fake: RecipientFakeTwilio, server_factory: ServerFactory,
) -> None:
    server = server_factory()
    for text in ("hola", "sí"):
        assert server.send(FLOODER, text).status_code == 200
    wait_until(lambda: len(fake.delivered_to(whatsapp(FLOODER))) == 2, 10, "two replies")
    # 15 KB, one word: a "name" to the trial flow (before issue 11, 60 KB of it came
    # back as 41 billed messages).
    assert server.send(FLOODER, "A" * 15_000).status_code == 200
    rows = _rows(server, FLOODER)
    replies = [r["body"] for r in rows if r["direction"] == "out"]
    assert len(replies) == 3, [len(str(r)) for r in replies]
    assert str(replies[-1]).startswith("Gracias, A") and len(str(replies[-1])) < 1_200
    [session] = server.rows("SELECT context FROM sessions WHERE phone = ?", (FLOODER,))
    assert len(str(session["context"])) < 1_100  # the name, capped at MAX_INPUT_CHARS


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None
