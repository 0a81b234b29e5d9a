"""sessions.choices, messages.text_key and messages.choices: quick replies and lists

A flow may offer choices with a text. The outbox row keeps them (and the text key the
body came from) so the send stays durable: the Twilio sender turns them into a Content
API template or numbered lines when it sends. The session keeps the choices a reply
may pick now, by its number or its words. All three are nullable: old rows offered
nothing.

Revision ID: 0009
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("choices", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("text_key", sa.String(64), nullable=True))
    op.add_column("messages", sa.Column("choices", sa.Text(), nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite >= 3.35): a batch copy of `sessions` would trip over
    # the active_sessions view and the foreign keys that point at it.
    op.drop_column("messages", "choices")
    op.drop_column("messages", "text_key")
    op.drop_column("sessions", "choices")
