"""Apps may call a Python function: apps.function and apps.python; jobs carry the call's
arguments (jobs.function_args, jobs.function_kwargs) and its outcome (jobs.function_outcome).

Additive: launchers of the previous version ignore the new columns, and the server defaults
fill them for the rows they insert (apps: "", an executable app; jobs: NULL, no call). They
read a function app as an executable app whose executable (``FUNCTION_APP_EXECUTABLE`` in
balsam.schemas.apps, what the column holds for such apps) fails the job with a line saying
the launcher is too old, rather than failing to read the app.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JOB_COLUMNS = ("function_args", "function_kwargs", "function_outcome")


def upgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.add_column(sa.Column("function", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("python", sa.Text(), nullable=False, server_default=""))
    with op.batch_alter_table("jobs") as batch:
        for name in JOB_COLUMNS:
            batch.add_column(sa.Column(name, sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN in place (SQLite 3.35+ has it): a batch copy of the jobs
    # table would drop the table the history and the edges point at, which SQLite's foreign
    # keys refuse once the table has rows.
    with op.batch_alter_table("jobs", recreate="never") as batch:
        for name in reversed(JOB_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table("apps", recreate="never") as batch:
        batch.drop_column("python")
        batch.drop_column("function")
