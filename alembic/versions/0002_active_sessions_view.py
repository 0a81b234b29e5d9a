"""active_sessions view: open sessions with the seconds left before their timeout

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = "id, channel, phone, flow, state, started_at, last_inbound_at, expires_at"
_SECONDS_LEFT = {
    "sqlite": "CAST(ROUND((julianday(expires_at) - julianday('now')) * 86400) AS INTEGER)",
    "postgresql": "CAST(EXTRACT(EPOCH FROM expires_at - (now() AT TIME ZONE 'utc')) AS INTEGER)",
}


def upgrade() -> None:
    seconds_left = _SECONDS_LEFT[op.get_bind().dialect.name]
    op.execute(
        f"CREATE VIEW active_sessions AS SELECT {_COLUMNS}, {seconds_left} AS seconds_left "
        "FROM sessions WHERE closed_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP VIEW active_sessions")
