"""apscheduler_jobs created by a migration; timeout jobs point at their new module

APScheduler used to create its table on start, which raced when several workers
started together on a fresh database. The layout change moved the job function from
`engine.timeouts:fire` to `engine.scheduling.timeouts:fire`: APScheduler deletes a job
whose function it cannot import, so stored jobs are rewritten here.

Revision ID: 0003
Revises: 0002
"""

import pickle
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = "engine.timeouts:fire"
_NEW = "engine.scheduling.timeouts:fire"


def upgrade() -> None:
    if not sa.inspect(op.get_bind()).has_table("apscheduler_jobs"):
        # The table APScheduler 3's SQLAlchemyJobStore declares, column for column.
        op.create_table(
            "apscheduler_jobs",
            sa.Column("id", sa.Unicode(191), primary_key=True),
            sa.Column("next_run_time", sa.Float(25), index=True),
            sa.Column("job_state", sa.LargeBinary, nullable=False),
        )
    _move_jobs(_OLD, _NEW)


def downgrade() -> None:
    _move_jobs(_NEW, _OLD)


def _move_jobs(old: str, new: str) -> None:
    bind = op.get_bind()
    jobs = sa.table("apscheduler_jobs", sa.column("id"), sa.column("job_state"))
    for job_id, blob in bind.execute(sa.select(jobs.c.id, jobs.c.job_state)).all():
        try:
            # Only APScheduler's own pickles, written by this same database's scheduler.
            state = pickle.loads(blob)  # noqa: S301
        except Exception:
            continue  # not a job APScheduler could restore either; leave it as it is
        if not isinstance(state, dict) or state.get("func") != old:
            continue
        state["func"] = new
        bind.execute(jobs.update().where(jobs.c.id == job_id)
                     .values(job_state=pickle.dumps(state, pickle.HIGHEST_PROTOCOL)))
