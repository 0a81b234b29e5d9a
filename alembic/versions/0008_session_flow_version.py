"""sessions.flow_version: the flow definition a session runs, as a hash

A session is pinned to the version of its flow (engine.core.flow.flow_version). When
the flow file changes, the engine compares the row's version with the loaded one and
keeps, moves (Flow.renamed) or closes (reason flow_changed) the session. Rows from
before this revision have none: they are checked the same way on their next message.

Revision ID: 0008
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("flow_version", sa.String(16), nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite >= 3.35), as in 0004: a batch copy would trip over the
    # active_sessions view and the foreign keys that point at sessions.
    op.drop_column("sessions", "flow_version")
