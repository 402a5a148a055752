"""The contract suite runs on every backend: SQLite, PostgreSQL, balsam.testing's fake, and
the edge service (a RemoteBackend to the server in process, over SQLite).

This ``backend`` replaces the one of tests/conftest.py for these tests only; the SQL ones are
built as there (a migrated SQLite file, a PostgreSQL database cloned from the template).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from balsam.backends.base import Backend
from balsam.backends.local import LocalBackend
from balsam.backends.remote import RemoteBackend
from balsam.store.engine import make_engine
from balsam.store.migrate import upgrade
from balsam.testing import MemoryBackend
from pgserver import PgServer, new_pg_database
from serverkit import SitePool, in_process, owner_token, remote, uvicorn_server


def _sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'balsam.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def uvicorn_pool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, SitePool]]:
    """One real uvicorn (``balsam server start``) for the session, serving a fresh SQLite
    database for every contract test that runs on it."""
    count = sum(
        1
        for item in request.session.items
        if getattr(item, "callspec", None) and item.callspec.params.get("backend") == "uvicorn"
    )
    pool = SitePool(tmp_path_factory.mktemp("uvicorn"), max(count, 1))
    with uvicorn_server(pool.paths, pool.state) as base:
        yield base, pool


@pytest.fixture(params=["sqlite", "postgres", "memory", "server", "uvicorn"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh backend of each kind: LocalBackend on SQLite and PostgreSQL, MemoryBackend,
    and a RemoteBackend to the server in process (its LocalBackend on SQLite) and to a real
    uvicorn on loopback."""
    be: Backend
    if request.param == "uvicorn":
        base, pool = request.getfixturevalue("uvicorn_pool")
        be = RemoteBackend(f"{base}/db/{pool.take()}", pool.token)
        yield be
        be.close()
        return
    if request.param == "server":
        local = LocalBackend(make_engine(_sqlite_url(tmp_path)))
        with in_process({"site": local}, tmp_path / "state") as (client, auth):
            be = remote(client, "http://testserver", "site", owner_token(auth, "alice", "site"))
            yield be
            be.close()
        local.close()
        return
    if request.param == "memory":
        be = MemoryBackend()
    elif request.param == "sqlite":
        be = LocalBackend(make_engine(_sqlite_url(tmp_path)))
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        be = LocalBackend(make_engine(new_pg_database(server)))
    yield be
    be.close()
