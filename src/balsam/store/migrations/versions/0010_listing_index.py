"""An index in the listing order: jobs (created_at, job_id).

`balsam ls` lists oldest first, and keyset pages continue after the last job shown in that
order; without an index the database sorts every matching job to give one page (1.2 s for the
first 50 of a million on PostgreSQL). Additive: older code writes the index like any other.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_created_job", "jobs", ["created_at", "job_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_created_job", table_name="jobs")
