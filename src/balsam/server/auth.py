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

The ``audit`` table records every denial (401 and 403: time, user when known, database, role
held and needed, method, path, token id when known; never a token) and every change the admin
commands make (users, tokens, grants), each in the transaction of the change itself. It keeps
the newest :data:`AUDIT_KEEP` rows: each insert deletes what falls beyond that, so a flood of
bad requests costs at most that many rows (tens of MB), never an unbounded file.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from balsam.config import balsam_home
from balsam.errors import AlreadyExists, ConfigError, NotFound, ValidationError
from balsam.private_files import refuse_shared

#: How long a new token lives unless told otherwise.
DEFAULT_TOKEN_DAYS = 30.0
STATE_FILE = "auth.db"
#: Audit rows kept: the newest this many (older ones are deleted as new ones come).
AUDIT_KEEP = 100_000
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
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    status INTEGER,
    user TEXT,
    db TEXT,
    role TEXT,
    needed TEXT,
    method TEXT,
    path TEXT,
    token_id INTEGER,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_user ON audit (user, id);
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


@dataclass(frozen=True)
class AuditEvent:
    """One row of the audit table: a denial (``event`` ``denied``, with ``status`` 401 or
    403) or an admin change (``add-user``, ``grant``, ``revoke``, ``token-create``,
    ``token-revoke``; ``detail`` names the account that ran the command)."""

    event: str
    user: str | None = None
    db: str | None = None
    role: str | None = None
    needed: str | None = None
    method: str | None = None
    path: str | None = None
    token_id: int | None = None
    status: int | None = None
    detail: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: The row's id (0 before it is stored).
    id: int = 0


_AUDIT_COLUMNS = "at, event, status, user, db, role, needed, method, path, token_id, detail"


def _admin() -> str:
    """Who runs an admin command (the account, for the audit row)."""
    try:
        return f"by {getpass.getuser()}"
    except (KeyError, OSError):  # no name for the uid (a container)
        return f"by uid {os.getuid()}"


def _by(user: str | None) -> str:
    """Who made a change: a server user through the API, else the admin command's account."""
    return f"by {user} (through the server)" if user else _admin()


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

    def __init__(self, path: Path, audit_keep: int = AUDIT_KEEP) -> None:
        self.path = path
        self.audit_keep = audit_keep

    @classmethod
    def open(
        cls, state_dir: Path | None = None, create: bool = True, audit_keep: int = AUDIT_KEEP
    ) -> AuthStore:
        """The store in ``state_dir``, made 0700/0600 when ``create`` and missing; refused
        (ConfigError) when either is readable by group or others. Tables missing from an
        older ``auth.db`` (the audit table) are added."""
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
        store = cls(file, audit_keep)
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
            token_id, token = self._insert_token(db, name, days, "first")
            self._audit(db, AuditEvent("add-user", user=name, token_id=token_id, detail=_admin()))
            return token

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
            token_id, token = self._insert_token(db, user, days, label)
            event = AuditEvent("token-create", user=user, token_id=token_id, detail=_admin())
            self._audit(db, event)
            return token_id, token

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
            (user,) = db.execute("SELECT user FROM tokens WHERE id = ?", (token_id,)).fetchone()
            self._audit(
                db, AuditEvent("token-revoke", user=user, token_id=token_id, detail=_admin())
            )

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

    def owner_of(self, token: str) -> Principal | None:
        """Whose ``token`` is, valid or not (for the audit row of a refused one)."""
        if not token or len(token) > 256:
            return None
        with self._connect() as db:
            row = db.execute(
                "SELECT id, user FROM tokens WHERE digest = ?", (digest(token),)
            ).fetchone()
        return Principal(user=row[1], token_id=row[0]) if row else None

    # grants
    def grant(self, user: str, role: Role, db_name: str, by: str | None = None) -> None:
        """Give ``user`` ``role`` on the workflow database ``db_name`` (replacing any);
        ``by``: the server user (an owner of ``db_name``) who asked, for the audit row."""
        check_name(db_name, "database name")
        with self._connect() as db:
            self._require_user(db, user)
            db.execute(
                "INSERT INTO grants (user, db, role) VALUES (?, ?, ?) "
                "ON CONFLICT (user, db) DO UPDATE SET role = excluded.role",
                (user, db_name, Role(role).value),
            )
            event = AuditEvent("grant", user=user, db=db_name, role=Role(role).value)
            self._audit(db, event, detail=_by(by))

    def revoke_grant(self, user: str, db_name: str, by: str | None = None) -> None:
        """Take away ``user``'s role on ``db_name`` (NotFound if none); ``by`` as for
        :meth:`grant`."""
        with self._connect() as db:
            cursor = db.execute("DELETE FROM grants WHERE user = ? AND db = ?", (user, db_name))
            if cursor.rowcount == 0:
                raise NotFound(f"user {user!r} has no role on {db_name!r}")
            self._audit(db, AuditEvent("revoke", user=user, db=db_name), detail=_by(by))

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

    # audit
    def record(self, event: AuditEvent) -> None:
        """Store ``event`` (a denial: the server calls this from its threads)."""
        with self._connect() as db:
            self._audit(db, event)

    def _audit(self, db: sqlite3.Connection, event: AuditEvent, detail: str | None = None) -> None:
        db.execute(
            f"INSERT INTO audit ({_AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.at.isoformat(timespec="microseconds"), event.event, event.status,
                event.user, event.db, event.role, event.needed, event.method, event.path,
                event.token_id, event.detail if detail is None else detail,
            ),
        )  # fmt: skip
        # The id is the insertion order (AUTOINCREMENT never reuses one): deleting below the
        # newest id minus the limit keeps the newest rows, through the primary key's index.
        db.execute(
            "DELETE FROM audit WHERE id <= (SELECT MAX(id) FROM audit) - ?", (self.audit_keep,)
        )

    def audit(
        self, since: datetime | None = None, user: str | None = None, limit: int = 50
    ) -> list[AuditEvent]:
        """The newest ``limit`` audit rows (from ``since``, of ``user``), oldest first."""
        where, args = [], []
        if since is not None:
            where.append("at >= ?")
            args.append(since.astimezone(UTC).isoformat(timespec="microseconds"))
        if user is not None:
            where.append("user = ?")
            args.append(user)
        sql = f"SELECT id, {_AUDIT_COLUMNS} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._connect() as db:
            rows = db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [
            AuditEvent(
                id=row[0], at=datetime.fromisoformat(row[1]), event=row[2], status=row[3],
                user=row[4], db=row[5], role=row[6], needed=row[7], method=row[8],
                path=row[9], token_id=row[10], detail=row[11],
            )
            for row in reversed(rows)
        ]  # fmt: skip
