"""The SQL store: the engine's Store port.

SQLAlchemy owns the engine, the pool, the PRAGMAs and BEGIN IMMEDIATE; the statements
of the per-message path run at driver level (persistence.sql): one transaction per
message is five or six small statements and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, Row
from sqlalchemy.exc import DBAPIError

from engine.core import choices as offers
from engine.core.errors import SessionBusy, StoreError
from engine.core.ports import Fence, SessionRecord, TrialRecord
from persistence.sealing import Sealer
from persistence.sql import Driver, is_transient

__all__ = [
    "ADD_EVENT", "ENQUEUE", "ENQUEUE_WITH_ID", "SAVE_SESSION", "SqlStore", "SqlTx", "TxRunner",
    "enqueue_params", "save_params", "session_from_row",
]

T = TypeVar("T")



def session_from_row(row: Row[Any]) -> SessionRecord:
    return SessionRecord(
        id=row.id, channel=row.channel, phone=row.phone, flow=row.flow, state=row.state,
        started_at=row.started_at, last_inbound_at=row.last_inbound_at,
        expires_at=row.expires_at, version=row.version, context=dict(row.context or {}),
        closed_at=row.closed_at, close_reason=row.close_reason, misses=row.misses,
        warned=bool(row.warned), choices=offers.load(row.choices),
        flow_version=row.flow_version,
    )


class TxRunner(Protocol):
    """Runs a function inside a committed write transaction and returns its result."""

    def __call__(self, fn: Callable[[SqlTx], T], /) -> T: ...


class SqlStore:
    """Serialised write transactions on one database."""

    def __init__(self, db: Engine, *, sealer: Sealer | None = None) -> None:
        self.db = db
        self._driver = Driver(db.dialect)
        # Seals the bodies that carry a password before they reach the database.
        self.sealer = sealer or Sealer()
        self._file = _FileIdentity(db.url.database if db.dialect.name == "sqlite" else None)
        # SQLite takes one writer at a time: threads of one process queue here instead
        # of in its sleeping busy handler. PostgreSQL serialises per conversation.
        self._write_lock: AbstractContextManager[object] = (
            contextlib.nullcontext() if self._driver.postgres else threading.Lock())

    @property
    def postgres(self) -> bool:
        return self._driver.postgres

    def check_file(self) -> None:
        """StoreError if the SQLite file was deleted or replaced since it was opened."""
        self._file.check()

    def free_bytes(self) -> tuple[str, int] | None:
        """The SQLite file's folder and the bytes free there; None on a server database."""
        return self._file.free()

    @contextmanager
    def transaction(self) -> Iterator[SqlTx]:
        with self._write_lock:
            # A deleted file still takes writes through the open descriptors, into an
            # inode nobody will read again: refuse them (a stat, about a microsecond).
            self._file.check()
            try:
                with self.db.begin() as conn:
                    yield SqlTx(conn, self._driver, self.sealer)
            except DBAPIError as exc:
                self._after_failure(exc)
                raise StoreError(f"database error: {exc.orig}",
                                 transient=is_transient(exc.orig or exc)) from exc
            except StoreError as exc:
                self._after_failure(exc)
                raise

    def _after_failure(self, exc: Exception) -> None:
        # SQLite opens a connection read-only when the file refuses writes at that moment
        # (a read-only or full disk), and it stays so after the fault clears. Drop the
        # pool: connections opened from now on see the file as it is. The writer runs
        # its batch again (the error is transient), on a fresh connection.
        if "readonly database" in str(exc):
            self.db.dispose()

    def run(self, fn: Callable[[SqlTx], T]) -> T:
        """Run `fn` in a write transaction of its own (the TxRunner of a process without
        a group-commit thread)."""
        with self.transaction() as tx:
            return fn(tx)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only connection for ops queries; it takes no write lock."""
        with self.db.connect() as conn:
            yield conn


class _FileIdentity:
    """The SQLite file's (device, inode) as first seen, to tell when the path no longer
    names the file this process writes to."""

    def __init__(self, database: str | None) -> None:
        self._path = os.path.abspath(database) if database not in (None, "", ":memory:") \
            else None
        self._seen = _identity(self._path) if self._path is not None else None

    def free(self) -> tuple[str, int] | None:
        if self._path is None:
            return None
        folder = os.path.dirname(self._path)
        stat = os.statvfs(folder)
        return folder, stat.f_bavail * stat.f_frsize

    def check(self) -> None:
        if self._path is None:
            return
        now = _identity(self._path)
        if self._seen is None:
            self._seen = now  # not created yet when the store was made
            return
        if now != self._seen:
            what = "deleted" if now is None else "replaced by another file"
            raise StoreError(
                f"the database file {self._path} was {what} after this worker opened it: "
                "writes would go where nobody reads them; restart the worker once the right "
                "file is in place")


def _identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


_SESSION_COLUMNS = ("id, channel, phone, flow, state, started_at, last_inbound_at, expires_at, "
                    "version, context, closed_at, close_reason, misses, warned, choices, "
                    "flow_version")


# The writes of the per-message path, shared with persistence.deferred (which sends many
# at once): one definition each, so a new column reaches both.
SAVE_SESSION = (
    "UPDATE sessions SET state = :state, last_inbound_at = :last_inbound_at, "
    "expires_at = :expires_at, closed_at = :closed_at, close_reason = :close_reason, "
    "version = :new_version, context = :context, misses = :misses, warned = :warned, "
    "choices = :choices, flow_version = :flow_version WHERE id = :id AND version = :read_version"
)
ADD_EVENT = (
    "INSERT INTO session_events (session_id, at, from_state, to_state, trigger, detail) "
    "VALUES (:session_id, :at, :from_state, :to_state, :trigger, :detail)"
)
_ENQUEUE_COLUMNS = ("session_id, channel, direction, body, body_sealed, status, attempts, "
                    "created_at, text_key, choices")
_ENQUEUE_VALUES = (":session_id, :channel, 'out', :body, :sealed, 'pending', 0, :now, :key, "
                   ":choices")
ENQUEUE = f"INSERT INTO messages ({_ENQUEUE_COLUMNS}) VALUES ({_ENQUEUE_VALUES})"
# The same with the id chosen beforehand (taken from the table's sequence).
ENQUEUE_WITH_ID = (f"INSERT INTO messages (id, {_ENQUEUE_COLUMNS}) "
                   f"VALUES (:id, {_ENQUEUE_VALUES})")


def save_params(d: Driver, record: SessionRecord, read_version: int) -> dict[str, Any]:
    return {
        "state": record.state, "last_inbound_at": d.time_out(record.last_inbound_at),
        "expires_at": d.time_out(record.expires_at), "closed_at": d.time_out(record.closed_at),
        "close_reason": record.close_reason, "new_version": read_version + 1,
        "context": d.json_out(record.context), "misses": record.misses,
        "warned": record.warned, "choices": offers.dump(record.choices),
        "flow_version": record.flow_version, "id": record.id, "read_version": read_version,
    }


def enqueue_params(
    d: Driver, sealer: Sealer, *, session_id: int, channel: str, body: str, now: datetime,
    redacted: str | None, key: str | None, choices: tuple[offers.Choice, ...],
) -> dict[str, Any]:
    # A body with a password goes in only sealed; `body` holds its redacted copy.
    return {"session_id": session_id, "channel": channel,
            "body": body if redacted is None else redacted,
            "sealed": sealer.seal(body) if redacted is not None else None,
            "now": d.time_out(now), "key": key, "choices": offers.dump(choices)}


class SqlTx:
    """One transaction; implements engine.core.ports.StoreTx with driver-level SQL."""

    def __init__(self, conn: Connection, driver: Driver, sealer: Sealer) -> None:
        self.conn = conn
        self._driver = driver
        self.sealer = sealer
        # Leases this transaction found held outside any savepoint: the row stays locked
        # (or, on SQLite, the whole database) until commit, so asking again is needless.
        self._held: set[Fence] = set()
        self._depth = 0

    @property
    def driver(self) -> Driver:
        return self._driver

    def execute(self, text: str, **params: Any) -> Any:
        """Driver-level SQL with `:name` parameters; returns the DBAPI cursor."""
        return self._driver.execute(self.conn, text, params)

    _run = execute

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self._run("SAVEPOINT message")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._run("ROLLBACK TO SAVEPOINT message")
            self._run("RELEASE SAVEPOINT message")
            raise
        finally:
            self._depth -= 1
        self._run("RELEASE SAVEPOINT message")

    def _session(self, row: Any) -> SessionRecord:
        t = self._driver.time_in
        return SessionRecord(
            id=row[0], channel=row[1], phone=row[2], flow=row[3], state=row[4],
            started_at=t(row[5]), last_inbound_at=t(row[6]),  # type: ignore[arg-type]
            expires_at=t(row[7]), version=row[8],  # type: ignore[arg-type]
            context=self._driver.json_in(row[9]), closed_at=t(row[10]), close_reason=row[11],
            misses=row[12], warned=bool(row[13]), choices=offers.load(row[14]),
            flow_version=row[15],
        )

    def lock_conversations(self, keys: Iterable[tuple[str, str]]) -> None:
        """Serialise with other workers on these (channel, phone) pairs until commit.

        On PostgreSQL a transaction-scoped advisory lock per pair, taken in sorted order
        so two batches never wait on each other in a cycle. SQLite's BEGIN IMMEDIATE
        already serialises every writer.
        """
        if not self._driver.postgres:
            return
        ordered = sorted({f"{channel}:{phone}" for channel, phone in keys})
        if ordered:
            # One round trip for the batch; the aggregate takes the rows, so the locks,
            # in the array's (sorted) order.
            self._run("SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) "
                      "FROM unnest(CAST(:keys AS text[])) AS k", keys=ordered)

    def holds(self, fence: Fence) -> bool:
        """Whether the lease is still `fence`; on PostgreSQL its row is then share-locked
        until commit, so no takeover can commit before the effects made under it."""
        if fence in self._held:
            return True
        row = self._run(
            "SELECT 1 FROM leases WHERE name = :name AND holder = :holder AND token = :token "
            f"AND expires_at > {self._driver.db_now}"
            + (" FOR SHARE" if self._driver.postgres else ""),
            name=fence.name, holder=fence.holder, token=fence.token,
        ).fetchone()
        if row is not None and self._depth == 0:
            # Inside a savepoint a rollback would release the row lock with it.
            self._held.add(fence)
        return row is not None

    def overdue(self, now: datetime, limit: int) -> list[int]:
        """Open sessions past their expiry, oldest first (the partial expiry index)."""
        cursor = self._run(
            "SELECT id FROM sessions WHERE closed_at IS NULL AND expires_at <= :now "
            "ORDER BY expires_at LIMIT :limit"
            # Workers scanning at once share the work instead of queueing on each other.
            + (" FOR UPDATE SKIP LOCKED" if self._driver.postgres else ""),
            now=self._driver.time_out(now), limit=limit,
        )
        return [int(row[0]) for row in cursor.fetchall()]

    def lock_overdue(self, now: datetime, limit: int) -> list[SessionRecord]:
        """PostgreSQL: overdue open sessions, each locked as `get_session(wait=False)`
        locks one (its conversation, then its row), in one statement. Sessions another
        transaction holds are left out (SKIP LOCKED, or their conversation is busy)."""
        rows = self._run(
            f"SELECT {_SESSION_COLUMNS}, "
            "pg_try_advisory_xact_lock(hashtextextended(channel || ':' || phone, 0)) "
            "FROM sessions WHERE closed_at IS NULL AND expires_at <= :now "
            "ORDER BY expires_at LIMIT :limit FOR UPDATE SKIP LOCKED",
            now=self._driver.time_out(now), limit=limit,
        ).fetchall()
        return [self._session(row) for row in rows if row[-1]]

    def open_session(self, channel: str, phone: str) -> SessionRecord | None:
        self.lock_conversations([(channel, phone)])  # held already in a batch: no cost
        row = self._run(
            f"SELECT {_SESSION_COLUMNS} FROM sessions "
            "WHERE channel = :channel AND phone = :phone AND closed_at IS NULL"
            + self._driver.for_update,
            channel=channel, phone=phone,
        ).fetchone()
        return self._session(row) if row is not None else None

    def get_session(self, session_id: int, *, wait: bool = True) -> SessionRecord | None:
        """The row, locked; with `wait` False, SessionBusy if another worker has it.

        A session's row is only ever locked under its conversation's advisory lock, so
        a message (which takes that lock first) never waits on a row another batch
        locked: the lock order is always conversation, then row.
        """
        if self._driver.postgres and not self._lock_session(session_id, wait=wait):
            raise SessionBusy(session_id)
        row = self._run(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = :id"
                        + self._driver.for_update, id=session_id).fetchone()
        return self._session(row) if row is not None else None

    def _lock_session(self, session_id: int, *, wait: bool) -> bool:
        # One round trip: channel and phone never change, so the key is read unlocked in
        # the statement that takes the lock (the expiry path runs this per session).
        take = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
        row = self._run(
            f"SELECT CAST({take}(hashtextextended(channel || ':' || phone, 0)) AS text) "
            "FROM sessions WHERE id = :id", id=session_id,
        ).fetchone()
        # pg_advisory_xact_lock returns void (''): taken once it returns.
        return row is None or row[0] != "false"

    def create_session(
        self, *, channel: str, phone: str, flow: str, state: str, now: datetime,
        expires_at: datetime, context: dict[str, Any], flow_version: str | None = None,
    ) -> SessionRecord:
        d = self._driver
        new_id = self._run(
            "INSERT INTO sessions (channel, phone, flow, state, started_at, last_inbound_at, "
            "expires_at, version, context, flow_version) VALUES (:channel, :phone, :flow, "
            ":state, :now, :now, :expires_at, 1, :context, :flow_version) RETURNING id",
            channel=channel, phone=phone, flow=flow, state=state, now=d.time_out(now),
            expires_at=d.time_out(expires_at), context=d.json_out(context),
            flow_version=flow_version,
        ).fetchone()[0]
        return SessionRecord(
            id=int(new_id), channel=channel, phone=phone, flow=flow, state=state,
            started_at=now, last_inbound_at=now, expires_at=expires_at, version=1,
            context=context, flow_version=flow_version,
        )

    def record_inbound(
        self, *, session_id: int, channel: str, message_id: str | None, body: str, now: datetime
    ) -> bool:
        # The unique index on twilio_sid makes the dedupe atomic, even across processes.
        cursor = self._run(
            "INSERT INTO messages (session_id, channel, direction, twilio_sid, body, status, "
            "attempts, created_at) VALUES (:session_id, :channel, 'in', :sid, :body, "
            "'received', 0, :now) ON CONFLICT DO NOTHING",
            session_id=session_id, channel=channel, sid=message_id, body=body,
            now=self._driver.time_out(now),
        )
        return bool(cursor.rowcount)

    def count_inbound(
        self, *, channel: str, phone: str, now: datetime, window: timedelta
    ) -> int:
        # One statement in the message's own transaction, under its conversation lock:
        # no round-trip of its own. SET reads the row as it was, so both CASEs agree.
        d = self._driver
        row = self._run(
            "INSERT INTO inbound_rates (channel, phone, window_start, received) "
            "VALUES (:channel, :phone, :now, 1) ON CONFLICT (channel, phone) DO UPDATE SET "
            "received = CASE WHEN inbound_rates.window_start <= :cutoff THEN 1 "
            "ELSE inbound_rates.received + 1 END, "
            "window_start = CASE WHEN inbound_rates.window_start <= :cutoff THEN :now "
            "ELSE inbound_rates.window_start END RETURNING received",
            channel=channel, phone=phone, now=d.time_out(now), cutoff=d.time_out(now - window),
        ).fetchone()
        return int(row[0])

    def save_session(self, record: SessionRecord, *, read_version: int) -> bool:
        cursor = self._run(SAVE_SESSION, **save_params(self._driver, record, read_version))
        if cursor.rowcount != 1:
            return False
        record.version = read_version + 1
        return True

    def add_event(
        self, *, session_id: int, from_state: str | None, to_state: str, trigger: str,
        detail: str | None, at: datetime,
    ) -> None:
        self._run(ADD_EVENT, session_id=session_id, at=self._driver.time_out(at),
                  from_state=from_state, to_state=to_state, trigger=trigger, detail=detail)

    def enqueue(
        self, *, session_id: int, channel: str, body: str, now: datetime,
        redacted: str | None = None, key: str | None = None,
        choices: tuple[offers.Choice, ...] = (),
    ) -> int:
        params = enqueue_params(self._driver, self.sealer, session_id=session_id,
                                channel=channel, body=body, now=now, redacted=redacted, key=key,
                                choices=choices)
        row = self._run(ENQUEUE + " RETURNING id", **params).fetchone()
        return int(row[0])

    def latest_trial(self, phone: str) -> TrialRecord | None:
        row = self._run(
            "SELECT phone, username, issued_at, expires_at FROM trials WHERE phone = :phone "
            "ORDER BY issued_at DESC LIMIT 1", phone=phone,
        ).fetchone()
        if row is None:
            return None
        t = self._driver.time_in
        return TrialRecord(row[0], row[1], t(row[2]), t(row[3]))  # type: ignore[arg-type]

    def add_trial(self, trial: TrialRecord, *, session_id: int) -> None:
        d = self._driver
        self._run(
            "INSERT INTO trials (phone, username, issued_at, expires_at, session_id) "
            "VALUES (:phone, :username, :issued_at, :expires_at, :session_id)",
            phone=trial.phone, username=trial.username, issued_at=d.time_out(trial.issued_at),
            expires_at=d.time_out(trial.expires_at), session_id=session_id,
        )
