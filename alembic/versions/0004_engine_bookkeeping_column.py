"""sessions.misses and sessions.warned: the engine's bookkeeping out of the flow's context

The engine counted messages not understood in a row (`misses`) and remembered the
"¿Seguís ahí?" notice (`warned`) inside `context`, where a flow's own keys could
collide with them. They become plain columns ops can read; open sessions keep their
values, moved out of `context`.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_sessions = sa.table(
    "sessions", sa.column("id", sa.Integer), sa.column("closed_at", sa.DateTime),
    sa.column("context", sa.JSON), sa.column("misses", sa.Integer),
    sa.column("warned", sa.Boolean),
)


def upgrade() -> None:
    op.add_column("sessions", sa.Column("misses", sa.Integer(), server_default=sa.text("0"),
                                        nullable=False))
    op.add_column("sessions", sa.Column("warned", sa.Boolean(), server_default=sa.false(),
                                        nullable=False))
    bind = op.get_bind()
    for session_id, context in _open_sessions(bind):
        if "misses" not in context and "warned" not in context:
            continue
        misses = int(context.pop("misses", 0) or 0)
        warned = bool(context.pop("warned", False))
        bind.execute(_sessions.update().where(_sessions.c.id == session_id)
                     .values(context=context, misses=misses, warned=warned))


def downgrade() -> None:
    bind = op.get_bind()
    query = sa.select(_sessions.c.id, _sessions.c.context, _sessions.c.misses,
                      _sessions.c.warned).where(_sessions.c.closed_at.is_(None))
    for session_id, context, misses, warned in bind.execute(query).all():
        if not misses and not warned:
            continue
        moved = dict(context or {})
        if misses:
            moved["misses"] = misses
        if warned:
            moved["warned"] = True
        bind.execute(_sessions.update().where(_sessions.c.id == session_id)
                     .values(context=moved))
    # A plain DROP COLUMN (SQLite >= 3.35): a batch copy of `sessions` would trip over
    # the active_sessions view and the foreign keys that point at it.
    op.drop_column("sessions", "warned")
    op.drop_column("sessions", "misses")


def _open_sessions(bind: Any) -> list[tuple[int, dict[str, Any]]]:
    query = sa.select(_sessions.c.id, _sessions.c.context).where(_sessions.c.closed_at.is_(None))
    return [(session_id, dict(context or {})) for session_id, context in bind.execute(query)]
