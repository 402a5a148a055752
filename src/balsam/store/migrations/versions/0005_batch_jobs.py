"""Launcher batch jobs as rows, and the batch job each launcher session runs in.

* ``batch_jobs``: one row per launcher batch job ``balsam submit-launch`` submits, written
  (state ``submitting``) before the scheduler is asked, then given the scheduler's id and
  state; ``balsam ls queues`` refreshes the state from the scheduler. ``client_key`` (unique)
  makes a repeated create create one row.
* ``sessions.batch_job``: the scheduler's job id the launcher found in its environment
  (SLURM_JOB_ID, PBS_JOBID, ...), so every run can be traced to the batch job that ran it.

Additive only: a new table and a nullable column (SQLite adds it without a rebuild). Launchers
of the previous revision still running ignore both.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scheduler", sa.String(32), nullable=False),
        sa.Column("scheduler_id", sa.String(128), nullable=True),
        sa.Column("project", sa.String(256), nullable=False),
        sa.Column("queue", sa.String(256), nullable=False),
        sa.Column("num_nodes", sa.Integer(), nullable=False),
        sa.Column("wall_time_minutes", sa.Float(), nullable=False),
        sa.Column("job_mode", sa.String(16), nullable=False),
        sa.Column("wf_filter", sa.String(256), nullable=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("status_message", sa.Text(), nullable=False),
        sa.Column("script", sa.Text(), nullable=True),
        sa.Column("client_key", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_batch_jobs"),
    )
    op.create_index("ix_batch_jobs_state", "batch_jobs", ["state"])
    op.create_index("uq_batch_jobs_client_key", "batch_jobs", ["client_key"], unique=True)
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("batch_job", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("batch_job")
    op.drop_index("uq_batch_jobs_client_key", table_name="batch_jobs")
    op.drop_index("ix_batch_jobs_state", table_name="batch_jobs")
    op.drop_table("batch_jobs")
