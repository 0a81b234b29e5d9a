"""inbound_rates: each phone's messages in its current rate window

The per-phone inbound rate limit (RATE_LIMIT_MESSAGES per RATE_LIMIT_WINDOW_SECONDS)
is counted here, in the transaction that stores the message, so it holds across every
worker on the database.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_rates",
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("phone", sa.String(32), primary_key=True),
        sa.Column("window_start", sa.DateTime, nullable=False),
        sa.Column("received", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("inbound_rates")
