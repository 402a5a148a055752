"""Idempotent launcher calls and claims that match the allocation.

* ``jobs.update_session`` / ``jobs.update_seq``: the session and sequence number of the last
  launcher call (claim or state update) applied to the job, so that a call sent twice is
  recognised and reported as a duplicate instead of being applied (or refused) again.
* ``jobs.cpus_needed`` / ``jobs.gpus_needed``: what one node must have for the job (derived
  from its resource fields when they are written), so that a claim asks the database only for
  jobs that fit the claimant's nodes.
* ``sessions.client_key``: a key the launcher picks, so that opening a session twice opens one;
  ``sessions.ended_at``: a session that ends keeps its row, so that its id is never given to
  another launcher (SQLite reuses the highest id of a deleted row; a launcher whose lease
  expired must not find its id taken by another).
* The claim indexes: runnable jobs by GPU need, then in claim order; and a small partial index
  of the processing states (RUN_DONE, RUN_ERROR, RUN_TIMEOUT, POSTPROCESSED) that a dead or
  stopped launcher left unheld, which any launcher now takes on.

Launchers of the previous revision that are still running ignore the new columns (the server
defaults fill them for rows they insert); the old claim indexes are dropped (their claims still
work, by another plan), because every index costs every state change a write.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen copies of balsam.store.tables' predicates at this revision.
RUN_PREDICATE = (
    "session_id IS NULL AND state IN ('PREPROCESSED', 'READY', 'RESTART_READY', 'STAGED_IN')"
)
PROCESSING_PREDICATE = (
    "session_id IS NULL AND state IN ('POSTPROCESSED', 'RUN_DONE', 'RUN_ERROR', 'RUN_TIMEOUT')"
)
INT_MAX = 2**31 - 1
ORDER: list[str | sa.TextClause] = [
    sa.text("gpus_needed DESC"),
    sa.text("num_nodes DESC"),
    sa.text("wall_time_minutes DESC"),
    "created_at",
]


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("update_session", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("update_seq", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("cpus_needed", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("gpus_needed", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("client_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True))
    # An index, not a table constraint: SQLite adds it without rebuilding the table (a rebuild
    # would null the session of every held job through the foreign key).
    op.create_index("uq_sessions_client_key", "sessions", ["client_key"], unique=True)
    # Integer division rounds down: (a + b - 1) / b is the ceiling, as domain.resources has it.
    # Products in 64 bits, capped at the 32-bit column's largest value (as the code stores).
    least = "LEAST" if op.get_bind().dialect.name == "postgresql" else "MIN"
    ranks = "CAST(ranks_per_node AS BIGINT)"
    op.execute(
        f"UPDATE jobs SET gpus_needed = {least}({ranks} * gpus_per_rank, {INT_MAX}), "
        f"cpus_needed = {least}(({ranks} * threads_per_rank + threads_per_core - 1) "
        f"/ threads_per_core, {INT_MAX})"
    )
    indexes: list[tuple[str, list[str | sa.TextClause], str]] = [
        ("ix_jobs_claim_run", ORDER, RUN_PREDICATE),
        ("ix_jobs_claim_run_wf", ["workflow", *ORDER], RUN_PREDICATE),
        ("ix_jobs_claim_processing", ["created_at"], PROCESSING_PREDICATE),
    ]
    op.drop_index("ix_jobs_claimable_wf", table_name="jobs")
    op.drop_index("ix_jobs_claimable", table_name="jobs")
    for name, columns, predicate in indexes:
        op.create_index(
            name,
            "jobs",
            columns,
            unique=False,
            sqlite_where=sa.text(predicate),
            postgresql_where=sa.text(predicate),
        )


def downgrade() -> None:
    for name in ("ix_jobs_claim_processing", "ix_jobs_claim_run_wf", "ix_jobs_claim_run"):
        op.drop_index(name, table_name="jobs")
    old = "session_id IS NULL AND state IN ('PREPROCESSED', 'READY', 'RESTART_READY', 'STAGED_IN')"
    order: list[str | sa.TextClause] = [
        sa.text("num_nodes DESC"),
        sa.text("wall_time_minutes DESC"),
        "created_at",
    ]
    for name, columns in (
        ("ix_jobs_claimable", order),
        ("ix_jobs_claimable_wf", ["workflow", *order]),
    ):
        op.create_index(
            name, "jobs", columns, sqlite_where=sa.text(old), postgresql_where=sa.text(old)
        )
    op.drop_index("uq_sessions_client_key", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("ended_at")
        batch.drop_column("client_key")
    with op.batch_alter_table("jobs") as batch:
        for column in ("gpus_needed", "cpus_needed", "update_seq", "update_session"):
            batch.drop_column(column)
