"""The `leases` row's statements: take or renew, check, release. Times are the
database's own clock (Driver.db_now), so workers on several machines agree."""

from __future__ import annotations

from datetime import datetime

from persistence.store import SqlTx

__all__ = ["ensure", "release", "renew"]


def ensure(tx: SqlTx, name: str) -> None:
    tx.execute("INSERT INTO leases (name, token) VALUES (:name, 0) ON CONFLICT DO NOTHING",
               name=name)


def renew(tx: SqlTx, name: str, holder: str, ttl_seconds: float) -> tuple[int, datetime] | None:
    """Take the lease if free or expired, extend it if ours: (token, expiry), or None.

    The token grows whenever the lease changes hands, or comes back to a holder after it
    had expired (a holder frozen past its expiry gets a new token, so whatever it
    started under the old one is refused).
    """
    now = tx.driver.db_now
    later = tx.driver.db_later
    row = tx.execute(
        "UPDATE leases SET "
        f"token = CASE WHEN holder = :holder AND expires_at > {now} THEN token "
        "ELSE token + 1 END, "
        f"holder = :holder, expires_at = {later} "
        "WHERE name = :name AND (holder = :holder OR holder IS NULL OR expires_at IS NULL "
        f"OR expires_at <= {now}) RETURNING token, expires_at",
        name=name, holder=holder, seconds=ttl_seconds,
    ).fetchone()
    if row is None:
        return None
    expires_at = tx.driver.time_in(row[1])
    assert expires_at is not None
    return int(row[0]), expires_at


def release(tx: SqlTx, name: str, holder: str, token: int) -> None:
    tx.execute("UPDATE leases SET holder = NULL, expires_at = NULL "
               "WHERE name = :name AND holder = :holder AND token = :token",
               name=name, holder=holder, token=token)
