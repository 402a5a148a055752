"""Replaying the Alembic migrations gives exactly the schema the code declares."""

from __future__ import annotations

from pathlib import Path

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


EXPRESSION_INDEXES = {"ix_jobs_claim_run", "ix_jobs_claim_run_wf", "ix_jobs_claim_processing"}


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
            "ix_jobs_claim_run",
            "ix_jobs_claim_run_wf",
            "ix_jobs_claim_processing",
        } <= indexes
        assert not {"ix_jobs_claimable", "ix_jobs_claimable_wf"} & indexes
    finally:
        engine.dispose()


def test_the_revisions_balsam_knows_are_the_migration_scripts() -> None:
    """migrate.REVISIONS (read on every open, without Alembic) matches the scripts, in order."""
    from balsam.store.migrate import REVISIONS, scripts

    chain = [s.revision for s in reversed(list(scripts().walk_revisions()))]
    assert list(REVISIONS) == chain
    assert scripts().get_current_head() == head_revision()


def test_opening_a_database_does_not_import_alembic(tmp_path: Path) -> None:
    """Every command and launcher opens the database: keep Alembic off that path."""
    import subprocess
    import sys

    from balsam.backends.factory import init_site

    site = init_site(tmp_path / "wf")
    code = (
        "import sys; from balsam.backends.factory import open_backend; "
        "from balsam.config import load_site; "
        f"open_backend(load_site({str(site.path)!r})).close(); "
        "print('alembic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
