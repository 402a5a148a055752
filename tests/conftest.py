"""Shared fixtures: a real PostgreSQL server for the run, and a backend on each database.

Every test that takes ``backend`` (or ``db_url``) runs twice: on SQLite and on PostgreSQL.
Databases are built by the Alembic migrations: a migrated template database is made once and
each PostgreSQL test gets a fresh copy (``CREATE DATABASE ... TEMPLATE``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).parent))

from balsam.backends.base import Backend
from balsam.backends.factory import init_site, open_backend
from balsam.backends.local import LocalBackend
from balsam.config import Site
from balsam.store.engine import make_engine
from balsam.store.migrate import upgrade
from pgserver import TEMPLATE_DB, PgServer, new_pg_database, start_server

#: The venv's bin (balsam, balsamactivate, mpiexec) comes first on PATH for every test process.
VENV_BIN = Path(sys.executable).parent
os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The test run's PostgreSQL server, with a migrated template database."""
    server = start_server()
    admin = create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}"))
        conn.execute(text(f"CREATE DATABASE {TEMPLATE_DB}"))
    template = make_engine(server.url(TEMPLATE_DB))
    upgrade(template)
    template.dispose()
    admin.dispose()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty, migrated workflow database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'balsam.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        return url
    server: PgServer = request.getfixturevalue("pg_server")
    return new_pg_database(server)


@pytest.fixture
def backend(db_url: str) -> Iterator[LocalBackend]:
    """A LocalBackend on a fresh database (SQLite, then PostgreSQL)."""
    be = LocalBackend(make_engine(db_url))
    yield be
    be.close()


@pytest.fixture
def balsam_bin() -> str:
    """Path of the installed ``balsam`` console script."""
    return str(VENV_BIN / "balsam")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests away from the user's ~/.balsam, any active workflow database and server."""
    monkeypatch.setenv("BALSAM_HOME", str(tmp_path / "balsam-home"))
    monkeypatch.delenv("BALSAM_DB_PATH", raising=False)
    # A shell pointed at a Balsam server would make every Backend of the tests remote.
    for name in ("BALSAM_URL", "BALSAM_TOKEN", "BALSAM_TOKEN_FILE", "BALSAM_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["sqlite", "postgres"])
def site(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    """An active workflow database directory (BALSAM_DB_PATH set) on each database kind."""
    path = tmp_path / "wf"
    if request.param == "sqlite":
        made = init_site(path)
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        made = init_site(path, kind="url", url=new_pg_database(server))
    monkeypatch.setenv("BALSAM_DB_PATH", str(made.path))
    return made


@pytest.fixture
def backend_of(site: Site) -> Iterator[Backend]:
    """A Backend on the test's site (what a test uses to add and inspect jobs)."""
    be = open_backend(site)
    yield be
    be.close()
