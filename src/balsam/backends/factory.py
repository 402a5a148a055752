"""Make workflow databases and open the Backend a site's settings call for."""

from __future__ import annotations

from pathlib import Path

from balsam.backends.base import Backend
from balsam.backends.local import LocalBackend
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
from balsam.store.engine import make_engine
from balsam.store.migrate import upgrade

SITE_DIRS = ("data", "log", "qsubmit")


def open_backend(site: Site) -> Backend:
    """The Backend for ``site`` (a LocalBackend on its database URL)."""
    return LocalBackend(make_engine(site.database_url()))


def open_active_backend() -> tuple[Site, Backend]:
    """The active site (``BALSAM_DB_PATH``) and its Backend."""
    site = load_site()
    return site, open_backend(site)


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
