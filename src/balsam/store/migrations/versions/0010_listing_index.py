"""An index in the listing order: jobs.created_at.

`balsam ls` lists oldest first, and keyset pages continue after the last job shown in that
order (created_at, then job_id); without an index the database sorts every matching job to
give one page (1.2 s for the first 50 of a million on PostgreSQL). Only created_at: new jobs
land at the index's end, so bulk creation barely pays for it, and the database sorts the jobs
of one created_at by id itself. Additive: older code writes the index like any other.

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
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_created_at", table_name="jobs")
