"""Jobs remember who made them through the edge service: jobs.created_by.

The server fills it from the caller's token, and a submitter may kill or change only the
jobs it made (docs/server.md). Additive and nullable: rows made before, and rows made on the
database directly (CLI, API, a launcher of the previous version), carry NULL, which only an
owner may change through a server.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("created_by", sa.String(256), nullable=True))


def downgrade() -> None:
    # In place (as 0008's downgrade explains): a batch copy of jobs is refused once rows exist.
    with op.batch_alter_table("jobs", recreate="never") as batch:
        batch.drop_column("created_by")
