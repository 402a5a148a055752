"""Replaying the Alembic migrations gives exactly the schema the code declares."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from balsam.store.engine import make_engine
from balsam.store.migrate import alembic_config, current_revision, head_revision, upgrade
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


def test_upgrading_to_0004_fills_what_each_job_needs_of_a_node(db_url: str) -> None:
    """Jobs made before 0004 get their CPU and GPU needs (capped at 32 bits) on upgrade, and
    the jobs a running launcher holds stay held (no table is rebuilt under them)."""
    engine = make_engine(db_url)
    try:
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0003")
        now = "2026-01-01 00:00:00"
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO sessions (id, label, hostname, pid, heartbeat, created_at) "
                    "VALUES (1, 'running', 'h', 1, :now, :now)"
                ),
                {"now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO apps (name, executable, description, preprocess, "
                    "postprocess, envscript) VALUES ('a', 'true', '', '', '', '')"
                )
            )
            for job_id, ranks, threads, tpc, gpus in [
                ("j1", 4, 3, 2, 1),
                ("j2", 2**31 - 1, 2**31 - 1, 1, 2**31 - 1),
            ]:
                conn.execute(
                    text(
                        "INSERT INTO jobs (job_id, name, workflow, description, application, "
                        "args, num_nodes, ranks_per_node, threads_per_rank, threads_per_core, "
                        "gpus_per_rank, cpu_affinity, node_packing_count, wall_time_minutes, "
                        "environ_vars, mpi_flags, input_files, stage_in_url, stage_out_files, "
                        "stage_out_url, post_error_handler, post_timeout_handler, "
                        "auto_timeout_retry, wait_for_parents, max_error_retries, "
                        "max_timeout_retries, data, tags, state, state_timestamp, created_at, "
                        "working_directory, error_count, timeout_count, lost_count, session_id) "
                        "VALUES "
                        "(:id, 'n', 'w', '', 'a', '', 1, :r, :t, :c, :g, 'none', 1, 1, '{}', '', "
                        "'', '', '', '', false, false, true, true, 0, 3, '{}', '{}', "
                        "'PREPROCESSED', :now, :now, 'd', 0, 0, 0, 1)"
                    ),
                    {"id": job_id, "r": ranks, "t": threads, "c": tpc, "g": gpus, "now": now},
                )
        upgrade(engine)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT job_id, cpus_needed, gpus_needed, session_id FROM jobs ORDER BY job_id"
                )
            ).all()
        assert [tuple(r) for r in rows] == [
            ("j1", 6, 4, 1),
            ("j2", 2**31 - 1, 2**31 - 1, 1),
        ]
    finally:
        engine.dispose()


def test_upgrading_to_0005_keeps_open_sessions_and_held_jobs(db_url: str) -> None:
    """0005 adds a table and a nullable column: a launcher's session and the jobs it holds,
    made at 0004, are there after the upgrade (no table rebuilt under them), and a downgrade
    removes exactly what 0005 added."""
    engine = make_engine(db_url)
    try:
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0004")
        assert "batch_jobs" not in inspect(engine).get_table_names()
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO sessions (id, label, hostname, pid, heartbeat, created_at, "
                    "client_key) VALUES (1, 'running', 'h', 1, :now, :now, 'k')"
                ),
                {"now": "2026-01-01 00:00:00"},
            )
        upgrade(engine)
        with engine.connect() as conn:
            row = conn.execute(text("SELECT id, client_key, batch_job FROM sessions")).one()
            assert tuple(row) == (1, "k", None)
            assert conn.execute(text("SELECT count(*) FROM batch_jobs")).scalar() == 0
        names = {ix["name"] for ix in inspect(engine).get_indexes("batch_jobs")}
        assert {"ix_batch_jobs_state", "uq_batch_jobs_client_key"} <= names
    finally:
        engine.dispose()


def test_upgrading_to_0007_gives_every_app_no_container(db_url: str) -> None:
    """0007 adds apps.container: apps made at 0006 (and by a 0006 launcher's inserts, which
    name no such column) run on the host as before; a downgrade removes only the column."""
    engine = make_engine(db_url)
    try:
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0006")
        assert "container" not in {c["name"] for c in inspect(engine).get_columns("apps")}
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO apps (name, executable, description, preprocess, "
                    "postprocess, envscript) VALUES ('old', 'true', '', '', '', '')"
                )
            )
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO apps (name, executable, description, preprocess, "
                    "postprocess, envscript) VALUES ('by_old_code', 'true', '', '', '', '')"
                )
            )
            rows = conn.execute(text("SELECT name, container FROM apps ORDER BY name")).all()
        assert [tuple(r) for r in rows] == [("by_old_code", ""), ("old", "")]
    finally:
        engine.dispose()


def test_upgrading_to_0008_keeps_every_app_and_job_as_it_was(db_url: str) -> None:
    """0008 adds function apps: apps made at 0007 (and by a 0007 launcher's inserts) are
    executable apps, jobs have no call and no outcome (SQL NULL, not JSON null)."""
    from balsam.backends.local import LocalBackend
    from balsam.schemas import AppCreate, JobCreate

    engine = make_engine(db_url)
    try:
        backend = LocalBackend(engine)
        backend.create_app(AppCreate(name="Echo", executable="echo"))
        (job,) = backend.create_jobs([JobCreate(name="j", workflow="w", application="Echo")])
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0007")
        assert "function_args" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO apps (name, executable, description, preprocess, "
                    "postprocess, envscript, container) "
                    "VALUES ('by_old_code', 'true', '', '', '', '', '')"
                )
            )
            apps = conn.execute(text("SELECT name, function, python FROM apps ORDER BY name"))
            assert [tuple(r) for r in apps] == [("Echo", "", ""), ("by_old_code", "", "")]
            nulls = conn.execute(
                text(
                    "SELECT function_args IS NULL, function_kwargs IS NULL, "
                    "function_outcome IS NULL FROM jobs"
                )
            )
            assert [tuple(bool(v) for v in r) for r in nulls] == [(True, True, True)]
        assert backend.get_job(job.job_id).function_args is None
    finally:
        engine.dispose()


def test_a_function_app_fails_cleanly_on_a_launcher_older_than_0008(db_url: str) -> None:
    """An older Balsam reads every app as an executable app (it required a non-empty,
    parsable executable): the column holds a command that fails the job saying why."""
    import subprocess

    from balsam.backends.local import LocalBackend
    from balsam.domain.commands import render_command
    from balsam.schemas import AppCreate
    from balsam.schemas.apps import FUNCTION_APP_EXECUTABLE

    engine = make_engine(db_url)
    try:
        backend = LocalBackend(engine)
        made = backend.create_app(AppCreate(name="Fit", function="pkg:fit"))
        assert made.executable == ""
        with engine.begin() as conn:
            stored = conn.execute(text("SELECT executable FROM apps WHERE name = 'Fit'")).scalar()
        assert stored == FUNCTION_APP_EXECUTABLE
        command = render_command(str(stored), "", None)
        ran = subprocess.run(command.argv, capture_output=True, text=True, check=False)
        assert ran.returncode == 1
        assert "a Balsam too old for function apps" in ran.stderr
    finally:
        engine.dispose()


def test_upgrading_to_0009_keeps_every_job_with_no_creator(db_url: str) -> None:
    """0009 adds jobs.created_by: jobs made before it (and inserted by 0008 code, which does
    not name the column) have no creator, which only an owner may change through a server."""
    from balsam.backends.local import LocalBackend
    from balsam.schemas import AppCreate, JobCreate

    engine = make_engine(db_url)
    try:
        backend = LocalBackend(engine)
        backend.create_app(AppCreate(name="Echo", executable="echo"))
        (job,) = backend.create_jobs([JobCreate(name="j", workflow="w", application="Echo")])
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0008")
        assert "created_by" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
        upgrade(engine)
        made = backend.get_job(job.job_id)
        assert made.created_by is None and made.name == "j" and made.workflow == "w"
        (mine,) = backend.create_jobs(
            [JobCreate(name="k", workflow="w", application="Echo", created_by="alice")]
        )
        assert backend.get_job(mine.job_id).created_by == "alice"
    finally:
        engine.dispose()
