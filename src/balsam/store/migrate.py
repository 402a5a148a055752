"""Build and upgrade a workflow database with Alembic (the only way tables are made).

Every open of a workflow database compares its revision with the newest one this Balsam ships
(:func:`schema_state`), so a database made by an older Balsam is reported as such rather than
failing later with "no such column".
"""

from __future__ import annotations

import functools
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

#: Alembic's bookkeeping table: one row, the revision the database is at.
VERSION_TABLE = "alembic_version"
#: Every revision Balsam ships, oldest first (tests/migrations checks it against the scripts).
#: Kept here so that opening a database, which every command and launcher does, need not
#: import Alembic (a fifth of a second) just to read the newest revision.
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "0010")


class SchemaState(StrEnum):
    """How a database's schema revision compares with this Balsam's migrations."""

    CURRENT = "current"
    """At the newest revision this Balsam ships."""
    BEHIND = "behind"
    """At an older revision: ``balsam db upgrade`` brings it up to date."""
    AHEAD = "ahead"
    """At a revision this Balsam does not know: a newer Balsam made or upgraded it."""
    EMPTY = "empty"
    """Never migrated: no Balsam tables at all."""


def alembic_config() -> Config:
    """An Alembic config pointing at Balsam's packaged migration scripts."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "balsam.store:migrations")
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` on ``engine``'s database."""
    from alembic import command

    cfg = alembic_config()
    # The write lock up front (SQLite): a second upgrader waits, then finds nothing to do.
    with engine.execution_options(balsam_write=True).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it was never migrated.

    One query when the database is a Balsam one (this runs on every open); only when it fails
    is the version table looked for, to tell "never migrated" from a real error.
    """
    with engine.connect() as conn:
        try:
            return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        except DBAPIError:
            conn.rollback()  # PostgreSQL refuses further statements in a failed transaction
            if inspect(conn).has_table(VERSION_TABLE):
                raise
            return None


def head_revision() -> str:
    """The newest revision Balsam ships."""
    return REVISIONS[-1]


def schema_state(revision: str | None) -> SchemaState:
    """Where a database at ``revision`` stands relative to this Balsam's migrations."""
    if revision is None:
        return SchemaState.EMPTY
    if revision == head_revision():
        return SchemaState.CURRENT
    if revision in REVISIONS:
        return SchemaState.BEHIND
    return SchemaState.AHEAD


@functools.cache
def scripts() -> ScriptDirectory:
    """Alembic's view of the migration scripts (parsed once)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())
