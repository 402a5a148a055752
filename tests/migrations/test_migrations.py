"""Replaying the Alembic migrations gives exactly the schema the code declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from balsam.store.engine import make_engine
from balsam.store.migrate import current_revision, head_revision
from balsam.store.tables import Base


def _plain_objects(
    obj: object, name: str | None, kind: str, reflected: bool, other: object
) -> bool:
    """Alembic cannot compare expression (DESC, partial) indexes; their names are checked below."""
    return not (kind == "index" and name in EXPRESSION_INDEXES)


EXPRESSION_INDEXES = {"ix_jobs_claimable", "ix_jobs_claimable_wf"}


def test_migrated_schema_matches_tables(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": False, "include_object": _plain_objects}
            )
            diff = compare_metadata(context, Base.metadata)
        assert diff == []
        indexes = {ix["name"] for ix in inspect(engine).get_indexes("jobs")}
        assert {
            "ix_jobs_state_workflow",
            "ix_jobs_session_id",
            "ix_jobs_claimable",
            "ix_jobs_claimable_wf",
        } <= indexes
    finally:
        engine.dispose()
