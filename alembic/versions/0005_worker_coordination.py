"""worker coordination in the database: the scheduler lease, outbox claims, send slots

Several workers share one database; the database is the only coordinator.
- `leases`: one row per role ('scheduler'), with its holder, expiry and fencing token.
- `messages.claimed_by` / `claim_until`: which worker is sending a row, and until when
  its claim holds; an expired claim may be taken over.
- `send_slots`: the next free send time per Twilio sender, shared by every worker so
  TWILIO_MAX_MPS holds summed over them.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    leases = op.create_table(
        "leases",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=True),
        sa.Column("token", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=True),
    )
    op.bulk_insert(leases, [{"name": "scheduler", "holder": None, "token": 0,
                             "expires_at": None}])
    op.create_table(
        "send_slots",
        sa.Column("sender", sa.String(64), primary_key=True),
        sa.Column("next_slot", sa.Float, nullable=False),
    )
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("claim_until", sa.DateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("claim_until")
        batch.drop_column("claimed_by")
    op.drop_table("send_slots")
    op.drop_table("leases")
