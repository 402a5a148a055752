"""PostgreSQL roles for the users of an owned cluster (``balsam db add-user|drop-user|users``).

Each person gets a login role of their own, with a generated password and one Balsam role,
given as membership of a group role that holds the privileges:

=============  =====================  ==================================================
Balsam role    group role             privileges on Balsam's tables (schema ``public``)
=============  =====================  ==================================================
``viewer``     ``balsam_viewer``      SELECT on every table
``submitter``  ``balsam_submitter``   viewer's, plus INSERT on jobs, job_parents, events,
                                      UPDATE on jobs, USAGE on the sequences: adding jobs
                                      and dependencies, killing and modifying jobs
``owner``      ``balsam_owner``       all privileges on every table and sequence (what
                                      launchers and the service need)
=============  =====================  ==================================================

No Balsam role is a superuser, may create roles or databases, or has
``pg_execute_server_program`` or ``pg_read_server_files``: none can run programs or read
files as the account that runs the server. Apps are registered, jobs deleted and the schema
migrated by the workflow's own account (the superuser ``postgres``) or an ``owner``.

Grants reach tables made by later migrations: ``ALTER DEFAULT PRIVILEGES`` gives viewers and
owners every new table (and owners and submitters every new sequence), and :func:`ensure_groups`,
run by every ``add-user`` and by ``balsam db upgrade``, grants again on what exists (a
submitter's INSERT and UPDATE are named per table, so a new table is written only by owners
until a release adds it to :data:`SUBMITTER_WRITES`).

A user's password is written to ``balsamdb/users/USER.pgpass``, a libpq passfile of mode 0600
(never printed: terminals and their scroll-back are not files of mode 0600); the owner hands a
copy to the user, who names it with ``passfile=`` in a ``--db-url``. Only a verifier (SCRAM)
of the password reaches the server, so not even a failed statement can log it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.sql import SQL, Composable, Identifier, Literal

from balsam.config import Site
from balsam.errors import AlreadyExists, DatabaseError, NotFound, ValidationError
from balsam.store import pgcluster
from balsam.store.pgsecrets import new_password, passfile_line, scram_verifier, write_secret

Connection = psycopg.Connection[tuple[object, ...]]

#: Balsam role -> the group role whose member a user becomes.
GROUPS = {"owner": "balsam_owner", "submitter": "balsam_submitter", "viewer": "balsam_viewer"}
#: The tables a submitter writes, and how: enough to add, link, kill and modify jobs.
SUBMITTER_WRITES = {"jobs": "INSERT, UPDATE", "job_parents": "INSERT", "events": "INSERT"}
#: Role names PostgreSQL keeps for itself, or Balsam for its groups and the superuser.
RESERVED = frozenset({pgcluster.SUPERUSER, *GROUPS.values(), "public", "none"})
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
USERS_DIR = "users"


@dataclass(frozen=True)
class RoleInfo:
    """A login role of the cluster and its Balsam role."""

    name: str
    balsam_role: str
    """``owner``, ``submitter``, ``viewer``, ``superuser`` or ``none``."""


def check_name(name: str) -> str:
    """``name`` when it can be a user's role; ValidationError otherwise."""
    if not _NAME.match(name):
        raise ValidationError(
            f"bad role name {name!r}: use 1-63 lower-case letters, digits and '_', "
            "not starting with a digit"
        )
    if name in RESERVED or name.startswith("pg_"):
        raise ValidationError(f"the role name {name!r} is reserved: choose another")
    return name


def user_passfile(site: Site, name: str) -> Path:
    """Where ``add-user`` writes the password of ``name``."""
    return site.pg_dir / USERS_DIR / f"{name}.pgpass"


def add_user(site: Site, name: str, role: str) -> Path:
    """Create the login role ``name`` with Balsam role ``role``; returns its password file."""
    check_name(name)
    if role not in GROUPS:
        raise ValidationError(f"unknown Balsam role {role!r} (known: {', '.join(GROUPS)})")
    with pgcluster.admin_connection(site) as conn:
        ensure_groups(conn)
        if _role_exists(conn, name):
            raise AlreadyExists(
                f"role {name!r} exists already: drop it first with 'balsam db drop-user {name}'"
            )
        file = user_passfile(site, name)
        file.parent.mkdir(mode=0o700, exist_ok=True)
        password = new_password()
        # The file first: a role whose password nobody holds would be of no use.
        write_secret(file, passfile_line(name, password, pgcluster.DB_NAME))
        try:
            _execute(
                conn,
                "CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}",
                Identifier(name),
                Literal(scram_verifier(password)),
                Identifier(GROUPS[role]),
            )
        except BaseException:
            file.unlink(missing_ok=True)
            raise
    return file


def drop_user(site: Site, name: str) -> None:
    """Remove the login role ``name``, end its sessions and delete its password file."""
    check_name(name)
    with pgcluster.admin_connection(site) as conn:
        if not _role_exists(conn, name):
            raise NotFound(f"no role {name!r} (see 'balsam db users')")
        # No new logins, then end the open sessions: a dropped role must not keep working.
        _execute(conn, "ALTER ROLE {} NOLOGIN", Identifier(name))
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
        )
        _execute(conn, "DROP ROLE {}", Identifier(name))
    user_passfile(site, name).unlink(missing_ok=True)


def list_users(site: Site) -> list[RoleInfo]:
    """Every login role of the cluster, by name, with its Balsam role."""
    by_group = {group: role for role, group in GROUPS.items()}
    with pgcluster.admin_connection(site) as conn:
        rows = conn.execute(
            "SELECT r.rolname, r.rolsuper, array_remove(array_agg(g.rolname), NULL) "
            "FROM pg_roles r LEFT JOIN pg_auth_members m ON m.member = r.oid "
            "LEFT JOIN pg_roles g ON g.oid = m.roleid "
            "WHERE r.rolcanlogin GROUP BY r.rolname, r.rolsuper ORDER BY r.rolname"
        ).fetchall()
    found = []
    for name, is_super, groups in rows:
        member_of = groups if isinstance(groups, list) else []
        roles = [by_group[g] for g in member_of if g in by_group]
        label = "superuser" if is_super else (roles[0] if roles else "none")
        found.append(RoleInfo(name=str(name), balsam_role=label))
    return found


def refresh_grants(site: Site) -> None:
    """Grant the Balsam roles their privileges on every table that exists now (after
    ``balsam db upgrade``); nothing when no user was ever added."""
    with pgcluster.admin_connection(site) as conn:
        if _role_exists(conn, GROUPS["viewer"]):
            ensure_groups(conn)


def ensure_groups(conn: Connection) -> None:
    """Create the group roles if missing and grant their privileges (idempotent)."""
    for group in GROUPS.values():
        if not _role_exists(conn, group):
            _execute(conn, "CREATE ROLE {} NOLOGIN", Identifier(group))
    viewer, submitter, owner = (Identifier(GROUPS[r]) for r in ("viewer", "submitter", "owner"))
    _execute(conn, "GRANT {} TO {}", viewer, submitter)
    database = Identifier(pgcluster.DB_NAME)
    for each in (viewer, submitter, owner):
        _execute(conn, "GRANT CONNECT ON DATABASE {} TO {}", database, each)
        _execute(conn, "GRANT USAGE ON SCHEMA public TO {}", each)
    for privileges, kind, grantee in (
        ("SELECT", "TABLES", viewer),
        ("ALL", "TABLES", owner),
        ("ALL", "SEQUENCES", owner),
        ("USAGE", "SEQUENCES", submitter),
    ):
        _execute(conn, f"GRANT {privileges} ON ALL {kind} IN SCHEMA public TO {{}}", grantee)
        # Tables later migrations make: they are made by the superuser, in schema public.
        _execute(
            conn,
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {{}} IN SCHEMA public "
            f"GRANT {privileges} ON {kind} TO {{}}",
            Identifier(pgcluster.SUPERUSER),
            grantee,
        )
    existing = _tables(conn)
    for table, privileges in SUBMITTER_WRITES.items():
        if table in existing:
            grant = f"GRANT {privileges} ON TABLE {{}} TO {{}}"
            _execute(conn, grant, Identifier(table), submitter)


def _tables(conn: Connection) -> set[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {str(row[0]) for row in rows}


def _role_exists(conn: Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is not None


def _execute(conn: Connection, template: str, *parts: Composable) -> None:
    """Run a utility statement with ``parts`` (identifiers, literals) quoted into it: utility
    statements take no bind parameters."""
    try:
        conn.execute(SQL(template).format(*parts))
    except psycopg.Error as exc:
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        raise DatabaseError(f"the database server refused: {reason}") from exc
