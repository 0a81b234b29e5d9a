"""sealed credentials bodies and the health heartbeat

- `messages.body_sealed`: the clear text of an outbound message that carries a
  password, encrypted with CREDENTIALS_KEY (Fernet); `body` holds only its redacted
  copy, so no password is ever written in clear to the database or its WAL. It is kept
  until Twilio reports the message delivered (a failed one is sent again), then dropped.
- `heartbeats`: one row per name that /healthz writes to prove the database takes a
  write (when no other commit proved it within the last second).

Downgrade drops both: a credentials message still unsent then goes out redacted.

Revision ID: 0007
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("body_sealed", sa.Text(), nullable=True))
    op.create_table(
        "heartbeats",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("heartbeats")
    # A plain DROP COLUMN (SQLite >= 3.35), as 0004 does.
    op.drop_column("messages", "body_sealed")
