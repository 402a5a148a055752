"""Workflow database commands: ``balsam init``, ``balsam which``, ``balsam db ...``.

``balsam db upgrade`` migrates the active database's schema to this Balsam's revision (every
other command refuses a database at another revision); ``balsam db start|stop|status`` manage
a server the workflow directory owns, and ``balsam db add-user|drop-user|users`` its roles
(one per person, each with a password and a Balsam role: see :mod:`balsam.backends.roles`).

``balsam init PATH`` makes a workflow directory: embedded SQLite by default, a private PostgreSQL
cluster with ``--db postgres``, or an existing server with ``--db-url``. A failed init leaves
nothing behind: a directory it made is removed, and a server it started is stopped.

``balsam which --name NAME`` is what ``balsamactivate`` calls: it resolves a name among the
known databases (or a path), remembers it, and prints the path alone. A NAME that is no path
and no database's name may be any part of one known database's path, as in Balsam 0.5
(``balsamactivate myW`` for ``~/myWorkflow``); a part of several is refused, naming them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

import click

from balsam.cli.common import BalsamCommand, BalsamGroup, print_rows
from balsam.config import (
    DatabaseSettings,
    Site,
    SiteSettings,
    known_sites,
    load_site,
    remember_site,
    resolve_site_path,
)
from balsam.errors import Ambiguous, BalsamError, ConfigError, NotFound, ValidationError

# balsam.backends.factory is imported inside the commands that need it: it pulls in SQLAlchemy
# and Alembic, which 'balsam which' (run by every balsamactivate) has no use for.

URL_SCHEMES = ("postgresql", "postgresql+psycopg", "sqlite")


@click.command("init", cls=BalsamCommand)
@click.argument("path", type=str)
@click.option(
    "--db",
    "kind",
    type=click.Choice(["sqlite", "postgres"]),
    default=None,
    help="sqlite (embedded, the default) or postgres (a private server under PATH).",
)
@click.option(
    "--db-url", default="", help="Use an existing database: postgresql://USER@HOST:PORT/DB"
)
def init(path: str, kind: str | None, db_url: str) -> None:
    """Create a workflow database at PATH."""
    if not path:
        # Path("") is the current directory: an empty argument (an unset variable) must not
        # turn the directory the user stands in into a workflow database.
        raise ValidationError("PATH is empty: give the directory to create, e.g. ~/myWorkflow")
    if db_url and kind is not None:
        raise ConfigError("give either --db or --db-url, not both")
    if db_url:
        _check_url(db_url)
    chosen = "url" if db_url else (kind or "sqlite")
    target = Path(path).expanduser().absolute()
    made_root, was_empty = _check_target(target)
    from balsam.backends.factory import init_site

    try:
        site = init_site(target, kind=chosen, url=db_url)
    except BaseException as exc:
        if made_root is not None or was_empty:
            _undo_init(target, made_root)
        if isinstance(exc, BalsamError) and db_url and db_url in str(exc):
            raise type(exc)(str(exc).replace(db_url, _mask(db_url))) from None
        raise
    click.echo(f"Created workflow database {site.name} at {site.path}")
    click.echo(f"Database: {_describe(site)}")
    if _owns_server(site):
        click.echo("Its server is running ('balsam db stop' stops it; balsamactivate starts it).")
    click.echo(f"Use it with: source balsamactivate {_activation_name(site)}")


def _check_url(url: str) -> None:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in URL_SCHEMES or not rest.strip("/"):
        raise ConfigError(
            f"bad --db-url {_mask(url)!r}: expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME"
        )


def _check_target(path: Path) -> tuple[Path | None, bool]:
    """The outermost directory init will create for PATH (None if PATH exists), and whether
    PATH is an existing empty directory: what a failed init may remove."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a directory")
    if path.exists():
        # A non-empty directory is refused by init_site before anything is written in it.
        return None, not any(path.iterdir())
    root = path
    while not root.parent.exists():
        root = root.parent
    return root, False


def _undo_init(path: Path, made_root: Path | None) -> None:
    """Remove what a failed init made (stopping a server it started); keep a dir the user made."""
    if (path / "balsamdb" / "data").is_dir():
        owned = Site(path=path, settings=SiteSettings(database=DatabaseSettings(kind="postgres")))
        from balsam.backends.factory import stop_server

        # Nothing more to do if it will not stop: the files go either way.
        with contextlib.suppress(BalsamError):
            stop_server(owned)
    if made_root is not None:
        shutil.rmtree(made_root, ignore_errors=True)
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _activation_name(site: Site) -> str:
    """The site's name, or its path when another known database has the same name."""
    others = [p for p in known_sites() if p.name == site.name and p != site.path]
    return str(site.path) if others else site.name


def _describe(site: Site) -> str:
    db = site.settings.database
    if db.kind == "sqlite":
        return f"SQLite {site.database_url().removeprefix('sqlite:///')}"
    if db.kind == "postgres":
        return f"PostgreSQL owned by this directory, {db.host}:{db.port} (data in {site.pg_dir})"
    return f"PostgreSQL at {_mask(db.url)}"


def _mask(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


@click.command("which", cls=BalsamCommand)
@click.option("--list", "list_all", is_flag=True, help="List the known workflow databases.")
@click.option(
    "--name",
    default=None,
    help="Print the path of the database NAME (a path, a name, or a unique part of one).",
)
@click.option(
    "--job",
    "job",
    default=None,
    metavar="ID",
    help="Print the working directory of job ID (an id prefix, or a unique part of an id).",
)
def which(list_all: bool, name: str | None, job: str | None) -> None:
    """Show the active workflow database, list known ones, or resolve a name.

    'source bcd ID' uses --job to change into a job's working directory.
    """
    if sum((list_all, name is not None, job is not None)) > 1:
        raise ConfigError("give one of --list, --name and --job")
    if job is not None:
        click.echo(str(_job_directory(job)))
    elif name is not None:
        path = _resolve_name(name)
        remember_site(path)
        click.echo(str(path))
    elif list_all:
        _list_sites()
    else:
        site = load_site()
        click.echo(f"Workflow database: {site.path}")
        click.echo(f"Database URL: {_mask(site.database_url())}")


def _job_directory(ident: str) -> Path:
    """The working directory of the job whose id starts with, or else contains, ``ident``."""
    from balsam.cli.common import active_backend, job_query

    with active_backend() as (site, backend):
        try:
            job_id = backend.resolve_job_id(ident)
        except NotFound:
            part = ident.strip().lower()
            found = backend.query_jobs(
                job_query(job_id__contains=part).model_copy(update={"limit": 2})
            )
            if len(found) != 1 or not part:
                if not found:
                    raise
                raise Ambiguous(f"{ident!r} is part of several job ids; give more of it") from None
            job_id = found[0].job_id
        return site.job_dir(backend.get_job(job_id).working_directory)


def _resolve_name(name: str) -> Path:
    """A path, a known database's name, or else a unique part of a known database's path."""
    try:
        return resolve_site_path(name)
    except NotFound:
        if not name:
            raise
        matches = [p for p in known_sites() if name in str(p)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise
        listed = ", ".join(str(m) for m in matches)
        raise Ambiguous(
            f"{name!r} is part of several workflow databases' paths: {listed}; "
            "give more of the name, or a path"
        ) from None


def _list_sites() -> None:
    sites = known_sites()
    if not sites:
        click.echo("No known workflow databases: make one with 'balsam init PATH'.")
        return
    active = os.environ.get("BALSAM_DB_PATH")
    active_path = Path(active).expanduser().resolve() if active else None
    width = max(len(p.name) for p in sites)
    for path in sites:
        mark = "*" if path == active_path else " "
        click.echo(f"{mark} {path.name:<{width}}  {path}")


@click.group("db", cls=BalsamGroup)
def db() -> None:
    """Manage the active workflow database: its schema, and its server if it owns one."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database's schema to this Balsam's version (idempotent)."""
    site = load_site()
    from balsam.backends.factory import upgrade_site

    before, after = upgrade_site(site)
    if _owns_server(site):
        from balsam.backends.roles import refresh_grants

        # Tables a migration made need the grants of the roles given before it.
        refresh_grants(site)
    if before == after:
        click.echo(f"Workflow database {site.name} is at schema revision {after}: nothing to do")
        return
    start = f"schema revision {before}" if before else "no schema"
    click.echo(f"Upgraded workflow database {site.name} from {start} to schema revision {after}")


def _owns_server(site: Site) -> bool:
    return site.settings.database.kind == "postgres"


def _no_server(site: Site) -> str:
    kind = site.settings.database.kind
    what = "embedded SQLite" if kind == "sqlite" else "a server it does not own"
    return f"{site.name} uses {what}: there is no database server to manage"


@db.command("start")
@click.option("--quiet", "-q", is_flag=True, help="Say nothing unless a server was started.")
def db_start(quiet: bool) -> None:
    """Start the workflow database's own PostgreSQL server."""
    site = load_site()
    if not _owns_server(site):
        if quiet:
            return
        raise ConfigError(_no_server(site))
    from balsam.backends.factory import server_status, start_server

    state = server_status(site)
    # Also when it runs: a password file others can read is refused either way.
    started = start_server(site)
    if state.startswith("running"):
        if not quiet:
            click.echo(f"Database server of {site.name} already {state}")
        return
    click.echo(f"Database server of {site.name} {server_status(started)}")


@db.command("stop")
def db_stop() -> None:
    """Stop the workflow database's own PostgreSQL server."""
    site = load_site()
    if not _owns_server(site):
        raise ConfigError(_no_server(site))
    from balsam.backends.factory import stop_server

    if stop_server(site):
        click.echo(f"Database server of {site.name} stopped")
    else:
        click.echo(f"Database server of {site.name} was not running")


@db.command("status")
def db_status() -> None:
    """Say whether the workflow database's own PostgreSQL server runs."""
    site = load_site()
    if not _owns_server(site):
        click.echo(_no_server(site))
        return
    from balsam.backends.factory import server_status

    click.echo(f"Database server of {site.name}: {server_status(site)}")


def _owned_site(what: str) -> Site:
    """The active site when it owns its server; ConfigError otherwise."""
    site = load_site()
    kind = site.settings.database.kind
    if kind != "postgres":
        uses = "embedded SQLite" if kind == "sqlite" else "a server it does not own"
        raise ConfigError(
            f"{site.name} uses {uses}: {what} only on a server the workflow database owns "
            "('balsam init --db postgres'); for --db-url ask that server's administrator"
        )
    return site


@db.command("add-user")
@click.argument("user")
@click.option(
    "--role",
    type=click.Choice(["owner", "submitter", "viewer"]),
    default=None,
    help="viewer: read; submitter: read, add and kill jobs; owner: everything but the schema.",
)
def db_add_user(user: str, role: str | None) -> None:
    """Give USER a PostgreSQL role of their own on the workflow database's server."""
    if role is None:
        # Checked here: Click's own message for a missing choice spans several lines.
        raise ValidationError("give the user's role: --role owner|submitter|viewer")
    site = _owned_site("roles are managed")
    from balsam.backends.roles import add_user

    file = add_user(site, user, role)
    db = site.settings.database
    click.echo(f"Added role {user} ({role}) to the database server of {site.name}")
    click.echo(
        f"Its password is in {file} (mode 0600, libpq passfile format): give {user} a copy "
        "privately, to keep with mode 0600"
    )
    click.echo(f"{user} connects with (COPY: the path of that copy, DIR: a new directory):")
    click.echo(
        f"  balsam init --db-url 'postgresql://{user}@{db.host}:{db.port}/{db.name}"
        "?passfile=COPY' DIR"
    )


@db.command("drop-user")
@click.argument("user")
def db_drop_user(user: str) -> None:
    """Remove USER's role (their open sessions end) and its password file."""
    site = _owned_site("roles are managed")
    from balsam.backends.roles import drop_user

    drop_user(site, user)
    click.echo(f"Dropped role {user} from the database server of {site.name}")


@db.command("users")
def db_users() -> None:
    """List the roles of the workflow database's server and their Balsam roles."""
    site = _owned_site("roles are listed")
    from balsam.backends.roles import list_users

    print_rows(("ROLE", "BALSAM ROLE"), ((r.name, r.balsam_role) for r in list_users(site)))


COMMANDS: list[click.Command] = [init, which, db]
