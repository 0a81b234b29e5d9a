"""Disk and database faults on the real server, and how it recovers when they clear:

- while the database refuses writes, an inbound webhook and a status callback get
  503 and nothing is half-written (no row, no reply, no event, the session row as it
  was); once the fault clears, Twilio's retry of that message is taken and answered,
  the status is recorded, and the conversation goes on (both faults below);
- a send in flight when the fault comes in is recorded once the database is back,
  with the SID Twilio gave it, and not sent again; the recipient's next reply still
  goes out (read-only);
- a timeout that comes due during the fault fires once after it clears, with its
  notice (read-only).

How the faults are made. The tests run as root, and root ignores file permissions, so
`chmod 0444` would not stop a single write. Two faults that do stop root:

- "read-only": `chattr +i` (immutable) on the database file and its -wal. Linux
  refuses every write to an immutable file with EPERM, through descriptors opened
  before too, so SQLite's next commit fails ("disk I/O error"). The -shm stays
  writable: SQLite maps it, and its locks still work, as on a read-only medium that
  only refuses the data writes.
- "disk full": the database lives on a small tmpfs mounted for the test, and a
  ballast file takes every free block, so the next commit, which must grow the WAL,
  fails with ENOSPC ("database or disk is full").

A test is skipped, with the reason, where this machine cannot make its fault (no
CAP_SYS_ADMIN to mount the tmpfs, a file system without the immutable flag).

The strict xfail near the bottom is a bug these tests found (see its reason): a
connection opened during a fault stays read-only. It turns into a failure (XPASS)
once fixed; then drop the mark.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core.errors import StoreError
from persistence import migrate
from persistence.db import make_engine
from persistence.store import SqlStore
from tests.support.harness import message_sid, wait_until, whatsapp
from tests.support.trial import assert_sessions_consistent, table_counts, text_of

PHONE = "+5491156100001"


class Fault:
    """One way of making the database unwritable for root, and undoing it."""

    name = ""

    def db_path(self, tmp_path: Path) -> Path:
        return tmp_path / "t.db"

    def inject(self, db: Path) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Undo everything (teardown, after the server stopped)."""
        self.clear()


class ReadOnly(Fault):
    name = "read-only"

    def __init__(self) -> None:
        self.files: list[str] = []

    @staticmethod
    def available(tmp_path: Path) -> str | None:
        probe = tmp_path / "chattr-probe"
        probe.write_text("x")
        try:
            result = subprocess.run(["chattr", "+i", str(probe)], capture_output=True,
                                    text=True, timeout=10)
        except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
            return f"chattr not usable: {exc}"
        if result.returncode != 0:
            return f"chattr +i not supported here: {result.stderr.strip()}"
        subprocess.run(["chattr", "-i", str(probe)], check=True, timeout=10)
        try:
            with open(probe, "a") as f:
                f.write("still writable")
        except OSError:
            return "cannot clear the immutable flag"
        return None

    def inject(self, db: Path) -> None:
        self.files = [str(db), f"{db}-wal"]
        assert Path(self.files[1]).exists(), "expected a WAL file next to the database"
        subprocess.run(["chattr", "+i", *self.files], check=True, timeout=10)

    def clear(self) -> None:
        if self.files:
            subprocess.run(["chattr", "-i", *self.files], check=True, timeout=10)
            self.files = []


class DiskFull(Fault):
    name = "disk-full"
    SIZE = "4m"

    def __init__(self, mount_point: Path) -> None:
        self.mount_point = mount_point
        self.mounted = False
        self.ballast = mount_point / "ballast"

    def mount(self) -> str | None:
        self.mount_point.mkdir()
        try:
            result = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={self.SIZE},mode=0755", "tmpfs",
                 str(self.mount_point)], capture_output=True, text=True, timeout=10)
        except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
            return f"mount not usable: {exc}"
        if result.returncode != 0:
            return f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): " \
                   f"{result.stderr.strip()}"
        self.mounted = True
        return None

    def db_path(self, tmp_path: Path) -> Path:
        return self.mount_point / "t.db"

    def inject(self, db: Path) -> None:
        chunk = b"\0" * 65536
        with open(self.ballast, "wb", buffering=0) as f:
            for _ in range(4096):  # bounded: 256 MiB at most, far above SIZE
                try:
                    f.write(chunk)  # unbuffered: a short write fills the last blocks
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
            else:
                raise AssertionError("the tmpfs never filled up")
        assert shutil.disk_usage(self.mount_point).free < 64 * 1024

    def clear(self) -> None:
        self.ballast.unlink(missing_ok=True)

    def close(self) -> None:
        if self.mounted:
            self.clear()
            if subprocess.run(["umount", str(self.mount_point)], timeout=30).returncode:
                subprocess.run(["umount", "-l", str(self.mount_point)], timeout=30)
            self.mounted = False


@pytest.fixture(params=["read-only", "disk-full"])
def fault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fault]:
    """Requested before `server_factory`, so it is undone after the server stopped."""
    made: Fault
    if request.param == "read-only":
        reason = ReadOnly.available(tmp_path)
        made = ReadOnly()
    else:
        made = DiskFull(tmp_path / "disk")
        reason = made.mount()
    if reason is not None:
        pytest.skip(reason)
    try:
        yield made
    finally:
        made.close()


def outbox_idle(server) -> bool:
    return not server.rows("SELECT id FROM messages WHERE direction = 'out' "
                           "AND status IN ('pending', 'sending')")


def test_webhook_answers_5xx_writes_nothing_and_recovers(fault, fake, server_factory,
                                                         tmp_path):
    server = server_factory(db_path=fault.db_path(tmp_path))
    assert server.send(PHONE, "hola").status_code == 200
    fake.wait_for(1)
    wait_until(lambda: outbox_idle(server), what="the greeting recorded as sent")
    (greeting,) = server.rows("SELECT twilio_sid FROM messages WHERE direction = 'out'")
    before = table_counts(server.rows)
    (session_before,) = server.rows("SELECT * FROM sessions")

    fault.inject(server.db_path)
    try:
        sid = message_sid()
        refused = server.send(PHONE, "sí", sid)
        # A 5xx, so Twilio logs it and calls the fallback URL.
        assert refused.status_code == 503, refused.text
        status = server.status_callback(greeting["twilio_sid"], "delivered")
        assert status.status_code == 503, status.text
        # Nothing half-written: no inbound row, no reply, no event, no session change.
        assert table_counts(server.rows) == before
        assert server.rows("SELECT * FROM sessions") == [session_before]
        assert not server.rows("SELECT id FROM messages WHERE twilio_sid = ?", (sid,))
    finally:
        fault.clear()

    # Recovered: Twilio's retry of the same message is taken and answered this time.
    assert server.send(PHONE, "sí", sid).status_code == 200
    assert server.status_callback(greeting["twilio_sid"], "delivered").status_code == 200
    assert server.send(PHONE, "Ana Gómez").status_code == 200
    fake.wait_for(3, timeout=15)
    assert fake.delivered_to(whatsapp(PHONE)) == [
        text_of("greeting", saludo_nombre=""), text_of("ask_name"),
        text_of("ask_email", name="Ana Gómez")]
    (session,) = assert_sessions_consistent(server.rows)
    assert session["state"] == "trial_request"
    assert session["version"] == session_before["version"] + 2
    assert len(server.rows("SELECT id FROM messages WHERE twilio_sid = ?", (sid,))) == 1
    assert server.rows("SELECT status FROM messages WHERE twilio_sid = ?",
                       (greeting["twilio_sid"],)) == [{"status": "delivered"}]
    log = server.log_text()
    assert "webhook not stored" in log and "status callback not stored" in log


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[ReadOnly]:
    reason = ReadOnly.available(tmp_path)
    if reason is not None:
        pytest.skip(reason)
    made = ReadOnly()
    try:
        yield made
    finally:
        made.close()


def test_send_in_flight_during_a_fault_does_not_wedge_the_recipient(read_only, fake,
                                                                     server_factory):
    server = server_factory(allow_traceback=True)
    fake.latency(1.0)  # keeps the greeting's request open while the fault goes in
    assert server.send(PHONE, "hola").status_code == 200
    wait_until(lambda: fake.in_flight, timeout=10, what="the greeting at the fake")
    read_only.inject(server.db_path)
    try:
        fake.wait_for(1, timeout=10)  # Twilio accepted it; recording that fails
        wait_until(lambda: "recording message" in server.log_text(), timeout=10,
                   what="the dispatcher to fail recording the send")
    finally:
        read_only.clear()
    fake.latency(0)
    assert server.send(PHONE, "sí").status_code == 200
    # The recipient's next reply must still go out once the database is writable (the
    # dispatcher polls every second).
    fake.wait_for(2, timeout=5)
    # The greeting was recorded once the database came back, so it was not sent again.
    bodies = fake.delivered_to(whatsapp(PHONE))
    assert len(bodies) == 2 and bodies[1] == text_of("ask_name"), bodies
    wait_until(lambda: outbox_idle(server), what="both replies recorded as sent")
    sids = [r.sid for r in fake.delivered]
    assert server.rows("SELECT body, twilio_sid FROM messages WHERE direction = 'out' "
                       "ORDER BY id") == [
        {"body": text_of("greeting", saludo_nombre=""), "twilio_sid": sids[0]},
        {"body": text_of("ask_name"), "twilio_sid": sids[1]}]


def _timeout_during_a_fault(read_only, fake, server_factory):
    """A server whose session's timeout came due while the database refused writes;
    the fault is cleared when this returns."""
    server = server_factory(allow_traceback=True,
                            env={"SESSION_TIMEOUT_MINUTES": "0.05",
                                 "SWEEP_INTERVAL_SECONDS": "1"})
    assert server.send(PHONE, "hola").status_code == 200
    fake.wait_for(1)
    wait_until(lambda: outbox_idle(server), what="the greeting recorded as sent")
    read_only.inject(server.db_path)
    try:
        wait_until(lambda: "timeout job for session" in server.log_text(), timeout=15,
                   what="the timeout to come due while the database refuses writes")
        # The scheduler's own bookkeeping for that run (removing the fired date job)
        # happens right after it hands the job over; hold the fault a moment past it.
        time.sleep(0.5)
    finally:
        read_only.clear()
    return server


def test_timeout_due_during_a_fault_fires_after_recovery(read_only, fake, server_factory):
    server = _timeout_during_a_fault(read_only, fake, server_factory)
    # Once writable again, the due timeout fires (job retry or sweep) and notifies, once.
    wait_until(lambda: server.rows("SELECT id FROM sessions WHERE close_reason = 'timeout'"),
               timeout=8, what="the session to time out after the fault cleared")
    fake.wait_for(2, timeout=10)
    assert fake.delivered_to(whatsapp(PHONE))[-1] == text_of("timeout_notice")
    assert [r["trigger"] for r in server.rows("SELECT trigger FROM session_events "
                                              "ORDER BY id")] == ["start", "expire"]



@pytest.mark.xfail(strict=True, raises=StoreError, reason=(
    "bug: SQLite opens a connection read-only when the file refuses writes at open time, "
    "and it stays read-only after the fault clears; the pool keeps it, so in `serve` "
    "later writes through it fail ('attempt to write a readonly database'), e.g. the "
    "outbox cannot record a send and means to send it again"))
def test_a_connection_opened_during_a_fault_writes_once_it_clears(read_only, tmp_path):
    path = tmp_path / "t.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    db = make_engine(url)
    # Another process keeps the WAL file in place while this pool starts empty.
    other = sqlite3.connect(path)
    try:
        other.execute("CREATE TABLE probe (n INTEGER)")
        other.commit()
        read_only.inject(path)
        try:
            with db.connect() as conn:  # a read, as /healthz or the outbox poll does
                assert conn.exec_driver_sql("SELECT count(*) FROM probe").scalar() == 0
        finally:
            read_only.clear()
        with SqlStore(db).transaction() as tx:  # the pool hands that connection back
            tx.conn.exec_driver_sql("INSERT INTO probe VALUES (1)")
    finally:
        db.dispose()
        other.close()


def test_read_only_fault_refuses_writes_and_clear_undoes_it(tmp_path):
    """The read-only fault's own hygiene: inject() makes the database and its -wal
    refuse root's writes, and clear() makes both writable again."""
    reason = ReadOnly.available(tmp_path)
    if reason is not None:
        pytest.skip(reason)
    db = tmp_path / "t.db"
    wal = Path(f"{db}-wal")
    db.write_text("x")
    wal.write_text("x")
    fault = ReadOnly()
    fault.inject(db)
    for path in (db, wal):
        with pytest.raises(PermissionError):
            path.write_text("y")
    fault.clear()
    for path in (db, wal):
        path.write_text("y")
        assert path.read_text() == "y" and os.access(path, os.W_OK)
