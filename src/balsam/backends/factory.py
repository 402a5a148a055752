"""Make workflow databases and open the Backend a site's settings call for.

Opening checks two things before anything else touches the database, each a one-line
:class:`ConfigError`: an SQLite file that is missing (connecting would silently create an empty
one), and a schema revision other than the one this Balsam ships (one query per open; a database
made by an older Balsam is upgraded with ``balsam db upgrade``, see :func:`upgrade_site`).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine

from balsam.backends.base import Backend
from balsam.backends.local import LocalBackend
from balsam.backends.remote import client_remote, remote_from_env
from balsam.backends.retry import retrying
from balsam.config import (
    DatabaseSettings,
    Site,
    SiteSettings,
    load_site,
    remember_site,
    save_settings,
    settings_path,
)
from balsam.errors import AlreadyExists, ConfigError
from balsam.store.engine import database_errors, make_engine, sqlite_path
from balsam.store.migrate import SchemaState, current_revision, head_revision, schema_state, upgrade

SITE_DIRS = ("data", "log", "qsubmit")


def open_backend(site: Site | None, retry: bool = True) -> Backend:
    """The Backend for ``site``: a RemoteBackend when ``BALSAM_URL`` and ``BALSAM_TOKEN`` are
    set (see :mod:`balsam.backends.remote`), else :func:`open_local_backend`.

    ``site`` may be None only with a remote backend (a client without a site directory).
    """
    # The saved login stands in for BALSAM_URL only where no site is active: an activated
    # workflow database means that one.
    remote = remote_from_env(use_login=site is None)
    if remote is not None:
        return retrying(remote) if retry else remote
    if site is None:
        raise ConfigError("no active workflow database, no BALSAM_URL and no 'balsam login'")
    return open_local_backend(site, retry)


def open_local_backend(site: Site, retry: bool = True) -> Backend:
    """The LocalBackend on ``site``'s database URL, its schema checked.

    With ``retry`` (for the CLI and the API) calls that fail transiently are repeated with
    backoff (:mod:`balsam.backends.retry`); the launcher repeats them itself, without waiting.
    ConfigError when the SQLite file is missing or the schema is not this Balsam's revision;
    DatabaseError when the database cannot be reached.
    """
    engine = _site_engine(site)
    try:
        with database_errors():
            revision = current_revision(engine)
        problem = _schema_problem(revision)
        if problem:
            raise ConfigError(problem)
    except BaseException:
        engine.dispose()
        raise
    backend: Backend = LocalBackend(engine)
    return retrying(backend) if retry else backend


def upgrade_site(site: Site) -> tuple[str | None, str | None]:
    """Migrate the site's database to this Balsam's newest revision; returns (before, after).

    Idempotent: a database already at the newest revision is left as it is. A database made by
    a newer Balsam is refused (ConfigError), never downgraded.
    """
    engine = _site_engine(site)
    try:
        with database_errors():
            before = current_revision(engine)
            if schema_state(before) is SchemaState.AHEAD:
                raise ConfigError(_schema_problem(before))
            upgrade(engine)
            return before, current_revision(engine)
    finally:
        engine.dispose()


def _site_engine(site: Site) -> Engine:
    """An engine on the site's database; refuses an SQLite file that is not there."""
    url = site.database_url()
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise ConfigError(f"workflow database file {path} is missing")
    return make_engine(url)


def _schema_problem(revision: str | None) -> str:
    """What is wrong with a database at ``revision``, empty when it is this Balsam's."""
    head = head_revision()
    state = schema_state(revision)
    if state is SchemaState.BEHIND:
        return (
            f"the workflow database is at schema revision {revision} but this Balsam needs "
            f"{head}: run 'balsam db upgrade'"
        )
    if state is SchemaState.AHEAD:
        return (
            f"the workflow database is at schema revision {revision}, newer than this Balsam "
            f"knows ({head}): it was made by a newer Balsam; upgrade Balsam to use it"
        )
    if state is SchemaState.EMPTY:
        return "the workflow database has no Balsam tables: run 'balsam db upgrade' to build them"
    return ""


def open_active_backend(retry: bool = True) -> tuple[Site, Backend]:
    """The active site (``BALSAM_DB_PATH``) and its Backend (see :func:`open_backend`)."""
    site = load_site()
    return site, open_backend(site, retry)


def open_client_backend(retry: bool = True) -> tuple[Site | None, Backend]:
    """As :func:`open_active_backend`, but a client without a site directory is served too:
    with ``BALSAM_DB_PATH`` unset, the Backend of ``BALSAM_URL`` or of the saved ``balsam
    login``, and no site (the error of no active site only when there is neither)."""
    if not os.environ.get("BALSAM_DB_PATH"):
        remote = client_remote()
        if remote is None:
            raise ConfigError(
                "no active workflow database: run 'source balsamactivate NAME' or set "
                "BALSAM_DB_PATH (or 'balsam login URL' to use a Balsam server)"
            )
        return None, retrying(remote) if retry else remote
    return open_active_backend(retry)


def init_site(path: Path, kind: str = "sqlite", url: str = "") -> Site:
    """Create a workflow database directory at ``path`` and build its schema.

    ``kind`` is ``sqlite`` (embedded, the default), ``url`` (an existing server at ``url``) or
    ``postgres`` (a private cluster under ``path``, created by :mod:`balsam.store.pgcluster`).
    """
    path = path.expanduser().resolve()
    if settings_path(path).exists():
        raise AlreadyExists(f"{path} is a workflow database already")
    if path.exists() and any(path.iterdir()):
        raise ConfigError(f"{path} exists and is not empty; choose a new directory")
    if kind == "url" and not url:
        raise ConfigError("--db-url needs a database URL such as postgresql://user@host:5432/db")
    settings = SiteSettings(database=DatabaseSettings(kind=kind, url=url))  # type: ignore[arg-type]
    site = Site(path=path, settings=settings)
    if kind == "postgres":
        from balsam.store import pgcluster

        pgcluster.check_can_create()
    path.mkdir(parents=True, exist_ok=True)
    for sub in SITE_DIRS:
        (path / sub).mkdir(exist_ok=True)
    if kind == "postgres":
        site = pgcluster.create_cluster(site)
    save_settings(path, site.settings)
    engine = make_engine(site.database_url())
    try:
        upgrade(engine)
    except Exception as exc:
        settings_path(path).unlink(missing_ok=True)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"cannot build the database at {site.database_url()}: {reason}") from exc
    finally:
        engine.dispose()  # an undisposed engine leaks a pooled connection per init
    remember_site(path)
    return site


def start_server(site: Site) -> Site:
    """Start the site's own database server unless it runs (its port may change if taken)."""
    from balsam.store import pgcluster

    return pgcluster.start(site)


def stop_server(site: Site) -> bool:
    """Stop the site's own database server; False if it was not running."""
    from balsam.store import pgcluster

    return pgcluster.stop(site)


def server_status(site: Site) -> str:
    """``running (...)`` or ``stopped`` for the site's own database server."""
    from balsam.store import pgcluster

    return pgcluster.status(site)
