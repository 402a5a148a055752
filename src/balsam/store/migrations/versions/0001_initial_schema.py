"""Initial schema: apps, jobs, job_parents (edges), events (history), sessions (leases).

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("executable", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("preprocess", sa.Text(), nullable=False),
        sa.Column("postprocess", sa.Text(), nullable=False),
        sa.Column("envscript", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apps")),
        sa.UniqueConstraint("name", name=op.f("uq_apps_name")),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("label", sa.String(length=256), nullable=False),
        sa.Column("hostname", sa.String(length=256), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("workflow", sa.String(length=256), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("application", sa.String(length=128), nullable=False),
        sa.Column("args", sa.Text(), nullable=False),
        sa.Column("num_nodes", sa.Integer(), nullable=False),
        sa.Column("ranks_per_node", sa.Integer(), nullable=False),
        sa.Column("threads_per_rank", sa.Integer(), nullable=False),
        sa.Column("threads_per_core", sa.Integer(), nullable=False),
        sa.Column("gpus_per_rank", sa.Integer(), nullable=False),
        sa.Column("cpu_affinity", sa.String(length=16), nullable=False),
        sa.Column("node_packing_count", sa.Integer(), nullable=False),
        sa.Column("wall_time_minutes", sa.Integer(), nullable=False),
        sa.Column("environ_vars", sa.JSON(), nullable=False),
        sa.Column("mpi_flags", sa.Text(), nullable=False),
        sa.Column("input_files", sa.Text(), nullable=False),
        sa.Column("stage_in_url", sa.Text(), nullable=False),
        sa.Column("stage_out_files", sa.Text(), nullable=False),
        sa.Column("stage_out_url", sa.Text(), nullable=False),
        sa.Column("post_error_handler", sa.Boolean(), nullable=False),
        sa.Column("post_timeout_handler", sa.Boolean(), nullable=False),
        sa.Column("auto_timeout_retry", sa.Boolean(), nullable=False),
        sa.Column("wait_for_parents", sa.Boolean(), nullable=False),
        sa.Column("max_error_retries", sa.Integer(), nullable=False),
        sa.Column("max_timeout_retries", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("state_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("working_directory", sa.Text(), nullable=False),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("timeout_count", sa.Integer(), nullable=False),
        sa.Column("lost_count", sa.Integer(), nullable=False),
        sa.Column("return_code", sa.Integer(), nullable=True),
        sa.Column("session_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["application"],
            ["apps.name"],
            name=op.f("fk_jobs_application_apps"),
            onupdate="CASCADE",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_jobs_session_id_sessions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_jobs")),
    )
    op.create_index("ix_jobs_session_id", "jobs", ["session_id"], unique=False)
    op.create_index("ix_jobs_state_workflow", "jobs", ["state", "workflow"], unique=False)
    op.create_index("ix_jobs_workflow_name", "jobs", ["workflow", "name"], unique=False)
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_state", sa.String(length=32), nullable=False),
        sa.Column("to_state", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.job_id"], name=op.f("fk_events_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_job_id_id", "events", ["job_id", "id"], unique=False)
    op.create_table(
        "job_parents",
        sa.Column("parent_id", sa.String(length=36), nullable=False),
        sa.Column("child_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["child_id"],
            ["jobs.job_id"],
            name=op.f("fk_job_parents_child_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["jobs.job_id"],
            name=op.f("fk_job_parents_parent_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("parent_id", "child_id", name=op.f("pk_job_parents")),
    )
    op.create_index("ix_job_parents_child_id", "job_parents", ["child_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_parents_child_id", table_name="job_parents")
    op.drop_table("job_parents")
    op.drop_index("ix_events_job_id_id", table_name="events")
    op.drop_table("events")
    op.drop_index("ix_jobs_workflow_name", table_name="jobs")
    op.drop_index("ix_jobs_state_workflow", table_name="jobs")
    op.drop_index("ix_jobs_session_id", table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("sessions")
    op.drop_table("apps")
