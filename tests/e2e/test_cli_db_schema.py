"""Opening a workflow database checks it first: a missing SQLite file, a schema revision that
is not this Balsam's. ``balsam db upgrade`` brings an older database up to date.

Old databases are built as an older Balsam left them: by the Alembic migrations up to 0002
(before ``jobs.max_lost_retries``), with an app in them. Each test runs on SQLite and on the
test run's PostgreSQL server (a site made with ``--db-url``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event, text

from balsam.api import close_default_backend
from balsam.backends.factory import SITE_DIRS, init_site, open_backend
from balsam.config import DatabaseSettings, Site, SiteSettings, load_site, save_settings
from balsam.core.models import BalsamJob
from balsam.errors import ConfigError
from balsam.schemas.queries import JobQuery
from balsam.store.engine import make_engine
from balsam.store.migrate import current_revision, head_revision, upgrade
from pgserver import PgServer

OLD = "0002"
HEAD = head_revision()
BEHIND = (
    f"balsam: error: the workflow database is at schema revision {OLD} but this Balsam needs "
    f"{HEAD}: run 'balsam db upgrade'\n"
)


def balsam(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``balsam`` command on the workflow database ``site``."""
    env = {**os.environ, "BALSAM_DB_PATH": str(site)}
    return subprocess.run(
        ["balsam", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def empty_database(request: pytest.FixtureRequest, path: Path) -> str:
    """The URL of a database with no tables: an SQLite file under ``path``, or a new
    PostgreSQL database on the test server."""
    if request.param == "sqlite":
        return f"sqlite:///{path / 'balsam.db'}"
    server: PgServer = request.getfixturevalue("pg_server")
    name = f"balsam_old_{os.getpid()}_{path.parent.name}"[:63].lower()
    admin = create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.url(name)


def make_site(path: Path, url: str) -> Site:
    """A workflow directory on ``url`` whose database is left as it is (not migrated)."""
    kind = "sqlite" if url.startswith("sqlite") else "url"
    settings = SiteSettings(
        database=DatabaseSettings(kind=kind, url="" if kind == "sqlite" else url)
    )
    path.mkdir(parents=True)
    for sub in SITE_DIRS:
        (path / sub).mkdir()
    save_settings(path, settings)
    return load_site(path)


@pytest.fixture(params=["sqlite", "postgres"])
def old_site(request: pytest.FixtureRequest, tmp_path: Path) -> Site:
    """A workflow database made by a Balsam whose newest migration was 0002, with one app."""
    site = make_site(tmp_path / "old", empty_database(request, tmp_path / "old"))
    engine = make_engine(site.database_url())
    upgrade(engine, OLD)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO apps (name, executable, description, preprocess, postprocess, "
                "envscript) VALUES ('SayHello', 'echo hello,', '', '', '', '')"
            )
        )
    engine.dispose()
    return site


def revision(site: Site) -> str | None:
    engine = make_engine(site.database_url())
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def test_an_older_database_is_refused_until_upgraded(old_site: Site) -> None:
    for argv in (["ls"], ["ls", "apps"], ["job", "--name", "a", "--workflow", "w",
                 "--application", "SayHello", "--yes"], ["launcher", "--consume-all"]):  # fmt: skip
        refused = balsam(old_site.path, *argv)
        assert (refused.returncode, refused.stdout, refused.stderr) == (2, "", BEHIND), argv
    assert revision(old_site) == OLD

    upgraded = balsam(old_site.path, "db", "upgrade")
    assert (upgraded.returncode, upgraded.stderr) == (0, "")
    assert upgraded.stdout == (
        f"Upgraded workflow database old from schema revision {OLD} to schema revision {HEAD}\n"
    )
    again = balsam(old_site.path, "db", "upgrade")
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout == f"Workflow database old is at schema revision {HEAD}: nothing to do\n"

    assert "SayHello" in balsam(old_site.path, "ls", "apps").stdout
    added = balsam(old_site.path, "job", "--name", "a", "--workflow", "w",
                   "--application", "SayHello", "--yes")  # fmt: skip
    assert (added.returncode, added.stderr) == (0, "")
    listed = balsam(old_site.path, "ls", "--verbose")
    assert added.stdout.strip() in listed.stdout
    assert [line.split() for line in listed.stdout.splitlines() if "max_lost_retries" in line] == [
        ["max_lost_retries", "3"]
    ]


def test_the_python_api_refuses_an_older_database(
    old_site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BALSAM_DB_PATH", str(old_site.path))
    try:
        with pytest.raises(ConfigError) as info:
            BalsamJob.objects.count()
    finally:
        close_default_backend()
    assert f"balsam: error: {info.value}\n" == BEHIND


def test_a_database_of_a_newer_balsam_is_refused_and_left_alone(old_site: Site) -> None:
    engine = make_engine(old_site.database_url())
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    engine.dispose()
    newer = (
        f"balsam: error: the workflow database is at schema revision 0999, newer than this "
        f"Balsam knows ({HEAD}): it was made by a newer Balsam; upgrade Balsam to use it\n"
    )
    for argv in (["ls"], ["db", "upgrade"]):
        refused = balsam(old_site.path, *argv)
        assert (refused.returncode, refused.stdout, refused.stderr) == (2, "", newer), argv
    assert revision(old_site) == "0999"


@pytest.fixture(params=["sqlite", "postgres"])
def empty_site(request: pytest.FixtureRequest, tmp_path: Path) -> Site:
    """A workflow directory whose database exists but has no tables (never migrated)."""
    url = empty_database(request, tmp_path / "bare")
    site = make_site(tmp_path / "bare", url)
    if request.param == "sqlite":
        (site.path / "balsam.db").touch()
    return site


def test_a_database_without_balsam_tables_is_built_by_upgrade(empty_site: Site) -> None:
    refused = balsam(empty_site.path, "ls")
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == (
        "balsam: error: the workflow database has no Balsam tables: "
        "run 'balsam db upgrade' to build them\n"
    )
    built = balsam(empty_site.path, "db", "upgrade")
    assert built.stdout == (
        f"Upgraded workflow database bare from no schema to schema revision {HEAD}\n"
    )
    assert balsam(empty_site.path, "ls").returncode == 0


def test_a_missing_sqlite_file_is_reported_and_not_recreated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = init_site(tmp_path / "x" / "wf")
    db_file = site.path / "balsam.db"
    for leftover in site.path.glob("balsam.db*"):
        leftover.unlink()
    before = sorted(p.name for p in site.path.iterdir())
    missing = f"balsam: error: workflow database file {db_file} is missing\n"
    for argv in (["ls"], ["app", "--name", "a", "--executable", "/bin/true"], ["db", "upgrade"],
                 ["launcher", "--consume-all"], ["modify", "abc", "state", "READY"]):  # fmt: skip
        done = balsam(site.path, *argv)
        assert (done.returncode, done.stdout, done.stderr) == (2, "", missing), argv
    monkeypatch.setenv("BALSAM_DB_PATH", str(site.path))
    try:
        with pytest.raises(ConfigError, match="is missing"):
            BalsamJob.objects.count()
    finally:
        close_default_backend()
    assert sorted(p.name for p in site.path.iterdir()) == before
    assert not db_file.exists()


def test_opening_checks_the_revision_with_one_query(site: Site) -> None:
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        backend = open_backend(site)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    try:
        assert backend.count_jobs(JobQuery()) == 0
    finally:
        backend.close()
    # SQLite's BEGIN is Balsam's own (see balsam.store.engine), not a round trip of its own.
    queries = [s for s in statements if not s.startswith("BEGIN")]
    assert queries == ["SELECT version_num FROM alembic_version"]
