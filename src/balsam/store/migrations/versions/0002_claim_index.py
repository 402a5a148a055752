"""Partial indexes serving the claim query in claim order.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen copy of balsam.store.tables.CLAIMABLE_PREDICATE at this revision.
PREDICATE = (
    "session_id IS NULL AND state IN ('PREPROCESSED', 'READY', 'RESTART_READY', 'STAGED_IN')"
)


ORDER: list[str | sa.TextClause] = [
    sa.text("num_nodes DESC"),
    sa.text("wall_time_minutes DESC"),
    "created_at",
]


def upgrade() -> None:
    indexes: list[tuple[str, list[str | sa.TextClause]]] = [
        ("ix_jobs_claimable", ORDER),
        ("ix_jobs_claimable_wf", ["workflow", *ORDER]),
    ]
    for name, columns in indexes:
        op.create_index(
            name,
            "jobs",
            columns,
            unique=False,
            sqlite_where=sa.text(PREDICATE),
            postgresql_where=sa.text(PREDICATE),
        )


def downgrade() -> None:
    op.drop_index("ix_jobs_claimable_wf", table_name="jobs")
    op.drop_index("ix_jobs_claimable", table_name="jobs")
