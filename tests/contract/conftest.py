"""The contract suite runs on every backend: SQLite, PostgreSQL and balsam.testing's fake.

This ``backend`` replaces the one of tests/conftest.py for these tests only; the SQL ones are
built as there (a migrated SQLite file, a PostgreSQL database cloned from the template).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from balsam.backends.base import Backend
from balsam.backends.local import LocalBackend
from balsam.store.engine import make_engine
from balsam.store.migrate import upgrade
from balsam.testing import MemoryBackend
from pgserver import PgServer, new_pg_database


def _sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'balsam.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh backend of each kind: LocalBackend on SQLite and PostgreSQL, MemoryBackend."""
    be: Backend
    if request.param == "memory":
        be = MemoryBackend()
    elif request.param == "sqlite":
        be = LocalBackend(make_engine(_sqlite_url(tmp_path)))
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        be = LocalBackend(make_engine(new_pg_database(server)))
    yield be
    be.close()
