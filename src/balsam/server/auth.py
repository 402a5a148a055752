"""The edge service's own state: users, API tokens and per-database grants (docs/server.md).

Kept in an SQLite file ``auth.db`` inside a state directory (``--state DIR``, default
``~/.balsam/server``, or ``$BALSAM_HOME/server``), apart from every workflow database: the
directory is 0700 and the file 0600, and :meth:`AuthStore.open` refuses to use them when
group or others may read them.

Tokens are ``secrets.token_urlsafe(32)`` (256 random bits), shown once and stored only as
their SHA-256 hash, with an expiry (30 days unless told) and a revocation mark. There is no
server secret: nothing is signed, so there is nothing to leave at a default value.

Roles are granted per workflow database (its site directory's name), weakest first:
``viewer`` (reads), ``submitter`` (reads, jobs, launcher sessions, batch jobs) and ``owner``
(everything, apps, deletes and service locks included).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from balsam.config import balsam_home
from balsam.errors import AlreadyExists, ConfigError, NotFound, ValidationError
from balsam.private_files import refuse_shared

#: How long a new token lives unless told otherwise.
DEFAULT_TOKEN_DAYS = 30.0
STATE_FILE = "auth.db"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    digest TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS grants (
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    db TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (user, db)
);
"""


class Role(StrEnum):
    """What a user may do on one workflow database, weakest first."""

    #: Reads: list, get, count, history, events, the change marker.
    VIEWER = "viewer"
    #: Reads, adding and changing jobs, dependencies, launcher sessions and batch jobs.
    SUBMITTER = "submitter"
    #: Everything: apps, deletes and service locks too.
    OWNER = "owner"

    @property
    def rank(self) -> int:
        """Order of strength (viewer 0, submitter 1, owner 2)."""
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        """Whether this role includes ``needed``."""
        return self.rank >= needed.rank


@dataclass(frozen=True)
class Principal:
    """Who a valid token belongs to."""

    user: str
    token_id: int


@dataclass(frozen=True)
class TokenInfo:
    """A token's record (never the token itself)."""

    id: int
    user: str
    label: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        """``valid``, ``expired`` or ``revoked``."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= now else "valid"


def default_state_dir() -> Path:
    """``server`` in Balsam's per-user directory (``BALSAM_HOME`` or ``~/.balsam``)."""
    return balsam_home() / "server"


def digest(token: str) -> str:
    """The SHA-256 of a token, the only form stored."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _check_private(path: Path, what: str) -> None:
    """Refuse a state directory or file that group or others may read or write."""
    refuse_shared(path, f"server state {what}", "700" if what == "directory" else "600")


def check_name(name: str, what: str = "user name") -> str:
    """A user or database name: letters, digits and ``._@-``, at most 64 characters."""
    if not _NAME.match(name):
        raise ValidationError(
            f"invalid {what} {name!r}: use letters, digits and ._@- (at most 64 characters)"
        )
    return name


class AuthStore:
    """Users, tokens and grants in ``STATE_DIR/auth.db`` (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(cls, state_dir: Path | None = None, create: bool = True) -> AuthStore:
        """The store in ``state_dir``, made 0700/0600 when ``create`` and missing; refused
        (ConfigError) when either is readable by group or others."""
        state_dir = (state_dir or default_state_dir()).expanduser()
        file = state_dir / STATE_FILE
        if not state_dir.exists():
            if not create:
                raise ConfigError(f"no server state at {state_dir}: run 'balsam server add-user'")
            state_dir.mkdir(mode=0o700, parents=True)
        _check_private(state_dir, "directory")
        if not file.exists():
            if not create:
                raise ConfigError(f"no server state at {file}: run 'balsam server add-user'")
            os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        _check_private(file, "file")
        store = cls(file)
        with store._connect() as db:
            db.executescript(_SCHEMA)
        return store

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One connection per call, one transaction (the server calls this from threads)."""
        with closing(sqlite3.connect(self.path, timeout=30)) as db:
            db.execute("PRAGMA foreign_keys = ON")
            with db:
                yield db

    # users
    def add_user(self, name: str, days: float = DEFAULT_TOKEN_DAYS) -> str:
        """Create user ``name`` and return its first token (AlreadyExists if taken)."""
        check_name(name)
        with self._connect() as db:
            try:
                db.execute(
                    "INSERT INTO users (name, created_at) VALUES (?, ?)",
                    (name, _now().isoformat()),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"user {name} exists already") from None
            return self._insert_token(db, name, days, "first")[1]

    def users(self) -> list[str]:
        """Every user name, sorted."""
        with self._connect() as db:
            return [row[0] for row in db.execute("SELECT name FROM users ORDER BY name")]

    def _require_user(self, db: sqlite3.Connection, name: str) -> None:
        if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is None:
            raise NotFound(f"no user {name!r}")

    # tokens
    def create_token(
        self, user: str, days: float = DEFAULT_TOKEN_DAYS, label: str = ""
    ) -> tuple[int, str]:
        """A new token for ``user``: (its id, the token, shown only now)."""
        with self._connect() as db:
            self._require_user(db, user)
            return self._insert_token(db, user, days, label)

    def _insert_token(
        self, db: sqlite3.Connection, user: str, days: float, label: str
    ) -> tuple[int, str]:
        if not 0 < days <= 3650:
            raise ValidationError(f"token lifetime must be between 0 and 3650 days (got {days})")
        token = secrets.token_urlsafe(32)
        now = _now()
        cursor = db.execute(
            "INSERT INTO tokens (user, digest, label, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (user, digest(token), label, now.isoformat(), (now + timedelta(days=days)).isoformat()),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid, token

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        """Token records (of ``user``, when given), oldest first."""
        sql = "SELECT id, user, label, created_at, expires_at, revoked_at FROM tokens"
        args: tuple[str, ...] = ()
        if user is not None:
            sql, args = sql + " WHERE user = ?", (user,)
        with self._connect() as db:
            rows = db.execute(sql + " ORDER BY id", args).fetchall()
        return [
            TokenInfo(
                id=row[0],
                user=row[1],
                label=row[2],
                created_at=datetime.fromisoformat(row[3]),
                expires_at=datetime.fromisoformat(row[4]),
                revoked_at=datetime.fromisoformat(row[5]) if row[5] else None,
            )
            for row in rows
        ]

    def revoke_token(self, token_id: int) -> None:
        """Revoke a token by id (NotFound if there is none; revoking twice is harmless)."""
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                (_now().isoformat(), token_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"no token {token_id}")

    def authenticate(self, token: str) -> Principal | None:
        """Who ``token`` belongs to; None when unknown, expired or revoked."""
        if not token or len(token) > 256:
            return None
        with self._connect() as db:
            row = db.execute(
                "SELECT id, user, expires_at, revoked_at FROM tokens WHERE digest = ?",
                (digest(token),),
            ).fetchone()
        if row is None or row[3] is not None:
            return None
        if datetime.fromisoformat(row[2]) <= _now():
            return None
        return Principal(user=row[1], token_id=row[0])

    # grants
    def grant(self, user: str, role: Role, db_name: str) -> None:
        """Give ``user`` ``role`` on the workflow database ``db_name`` (replacing any)."""
        check_name(db_name, "database name")
        with self._connect() as db:
            self._require_user(db, user)
            db.execute(
                "INSERT INTO grants (user, db, role) VALUES (?, ?, ?) "
                "ON CONFLICT (user, db) DO UPDATE SET role = excluded.role",
                (user, db_name, Role(role).value),
            )

    def revoke_grant(self, user: str, db_name: str) -> None:
        """Take away ``user``'s role on ``db_name`` (NotFound if none)."""
        with self._connect() as db:
            cursor = db.execute("DELETE FROM grants WHERE user = ? AND db = ?", (user, db_name))
            if cursor.rowcount == 0:
                raise NotFound(f"user {user!r} has no role on {db_name!r}")

    def role_of(self, user: str, db_name: str) -> Role | None:
        """``user``'s role on ``db_name``, None without a grant."""
        with self._connect() as db:
            row = db.execute(
                "SELECT role FROM grants WHERE user = ? AND db = ?", (user, db_name)
            ).fetchone()
        return Role(row[0]) if row else None

    def grants(self) -> list[tuple[str, str, Role]]:
        """Every (user, database, role)."""
        with self._connect() as db:
            rows = db.execute("SELECT user, db, role FROM grants ORDER BY user, db").fetchall()
        return [(row[0], row[1], Role(row[2])) for row in rows]
