"""Several workers on one database, as an operator runs them: started together, on a
database that is fresh or not migrated, with `serve --workers N`, and an outbox whose
one long backlog must not hold up anyone else's reply."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.support.harness import Server, Servers, free_port, wait_until, whatsapp
from tests.support.postgres import scratch_database
from tests.support.recipients import RecipientFakeTwilio

pytestmark = pytest.mark.e2e
GREETING = "¡Hola! 👋"


def _env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("DATABASE_", "TWILIO_", "FLOWS_", "SESSION_"))}
    return {**keep, "FLOWS_DIR": str(Path(__file__).resolve().parents[2] / "flows"), **extra}


def _tertulia(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=60, check=False)


def test_three_workers_started_together_on_a_fresh_sqlite_file_all_come_up(
    fake: RecipientFakeTwilio, tmp_path: Path,
) -> None:
    servers = Servers(tmp_path, fake.base_url)
    workers = [Server(tmp_path / f"w{i}", twilio_api=fake.base_url, name=f"w{i}",
                      db_path=tmp_path / "fresh.db") for i in range(3)]
    servers.made.extend((w, False) for w in workers)
    failures: list[BaseException] = []

    def start(worker: Server) -> None:
        try:
            worker.start()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert failures == []
        roles = sorted(w.health()["scheduler"] for w in workers)
        assert roles == ["active", "standby", "standby"]
        assert workers[1].send("+5491100000001", "hola").status_code == 200
        wait_until(lambda: fake.delivered_to(whatsapp("+5491100000001")), 10, "the greeting")
    finally:
        problems = servers.close()
    assert problems == []


def test_serve_on_an_unmigrated_postgres_refuses_in_one_line_naming_db_upgrade(
    tmp_path: Path,
) -> None:
    with scratch_database(migrated=False) as url:
        secret_url = make_url(url).set(password="s3cret-pw").render_as_string(
            hide_password=False)
        result = _tertulia(tmp_path, "serve", "--port", str(free_port()),
                           DATABASE_URL=secret_url)
        assert result.returncode == 1
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert "tertulia db upgrade" in lines[0] and "not migrated" in lines[0]
        assert "Traceback" not in result.stderr
        assert "s3cret-pw" not in result.stderr + result.stdout
        assert "***" in lines[0]


def test_db_upgrade_twice_at_once_on_postgres_both_succeed_and_mask_the_password(
    tmp_path: Path,
) -> None:
    with scratch_database(migrated=False) as url:
        secret_url = make_url(url).set(password="s3cret-pw").render_as_string(
            hide_password=False)
        results: list[subprocess.CompletedProcess[str]] = []
        threads = [threading.Thread(target=lambda: results.append(
            _tertulia(tmp_path, "db", "upgrade", DATABASE_URL=secret_url))) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
        for result in results:
            assert "s3cret-pw" not in result.stdout + result.stderr
            assert "***" in result.stdout
        db = create_engine(url)
        try:
            with db.connect() as conn:
                tables = set(conn.execute(text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
        finally:
            db.dispose()
        assert {"sessions", "messages", "leases", "send_slots", "apscheduler_jobs"} <= tables


def test_serve_with_two_workers_shares_the_port_and_one_holds_the_lease(
    tmp_path: Path,
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--port", str(port), "--workers", "2"],
        cwd=tmp_path, env=_env(DATABASE_URL=f"sqlite:///{tmp_path / 'two.db'}"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        seen: dict[str, str] = {}

        def both_answered() -> bool:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
            except httpx.HTTPError:
                return False
            seen[health["worker"]] = health["scheduler"]
            return len(seen) == 2
        wait_until(both_answered, 30, "both workers answering on the one port")
        assert sorted(seen.values()) == ["active", "standby"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_one_recipients_backlog_does_not_hold_up_the_others(
    fake: RecipientFakeTwilio, tmp_path: Path, database: str,
) -> None:
    backlog = "+5491100000099"
    others = [f"+54911000001{i:02d}" for i in range(5)]
    with scratch_database() if database == "postgres" else _nothing() as url:
        env = {"DATABASE_URL": url} if url else {}
        servers = Servers(tmp_path, fake.base_url, env=env)
        try:
            server = servers.start(env={"TWILIO_MAX_MPS": "40"})
            fake.latency = 0.02
            assert server.send(backlog, "hola").status_code == 200
            wait_until(lambda: fake.delivered_to(whatsapp(backlog)), 10, "the first greeting")
            _queue(server, backlog, 150)
            wait_until(lambda: len(fake.delivered_to(whatsapp(backlog))) > 5, 10,
                       "the backlog to start going out")
            for phone in others:
                assert server.send(phone, "hola").status_code == 200
            wait_until(lambda: all(fake.delivered_to(whatsapp(p)) for p in others), 20,
                       "the other recipients' greetings")
            sent_to_backlog = len(fake.delivered_to(whatsapp(backlog)))
            # Each of them was answered while the long backlog was still going out.
            assert sent_to_backlog < 100, sent_to_backlog
            wait_until(lambda: len(fake.delivered_to(whatsapp(backlog))) == 151, 30,
                       "the whole backlog")
            got = fake.delivered_to(whatsapp(backlog))[1:]
            assert got == [f"línea {i}" for i in range(150)], "order per recipient"
        finally:
            problems = servers.close()
    assert problems == []


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def _queue(server: Server, phone: str, count: int) -> None:
    """Pending replies for `phone`, as a burst of proactive notices would leave them."""
    [session] = server.rows("SELECT id FROM sessions WHERE phone = ? AND closed_at IS NULL",
                            (phone,))
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    url = server.database_url
    db = create_engine(url)
    try:
        with db.begin() as conn:
            for i in range(count):
                conn.execute(text(
                    "INSERT INTO messages (session_id, channel, direction, body, status, "
                    "attempts, created_at) VALUES (:sid, 'whatsapp', 'out', :body, 'pending', "
                    "0, :now)"), {"sid": session["id"], "body": f"línea {i}", "now": now})
    finally:
        db.dispose()
