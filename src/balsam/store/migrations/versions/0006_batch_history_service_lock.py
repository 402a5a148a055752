"""The history of each launcher batch job, and the lock that makes one service per database.

* ``batch_job_events``: one row per state a batch job entered (from ``submitting`` on), with
  the reason, so ``balsam queue show ID`` tells what happened to it and when.
* ``service_locks``: one row per lock name (``service``); the service that holds it renews
  ``expires_at`` on every pass, and another may take it over once it has expired (its holder
  was killed or lost its host). ``stop_requested`` asks the holder to stop from any host;
  ``status`` holds the holder's last report (JSON) for ``balsam service status``.

Additive only: two new tables.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_job_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_job_id", sa.Integer(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_state", sa.String(32), nullable=False),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_job_id"],
            ["batch_jobs.id"],
            name="fk_batch_job_events_batch_job_id_batch_jobs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_batch_job_events"),
    )
    op.create_index(
        "ix_batch_job_events_batch_job_id_id", "batch_job_events", ["batch_job_id", "id"]
    )
    op.create_table(
        "service_locks",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("hostname", sa.String(256), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stop_requested", sa.Boolean(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_service_locks"),
    )


def downgrade() -> None:
    op.drop_table("service_locks")
    op.drop_index("ix_batch_job_events_batch_job_id_id", table_name="batch_job_events")
    op.drop_table("batch_job_events")
