"""The audit table of the server's auth store: denials on a real uvicorn become rows that
`balsam server audit` lists (never a token), admin changes are recorded with them, the table
keeps only its newest rows, and an auth.db made before the table gets it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from balsam.backends.factory import init_site
from balsam.backends.remote import RemoteBackend
from balsam.errors import AccessDenied
from balsam.schemas.apps import AppCreate
from balsam.server.auth import AuditEvent, AuthStore, Role
from launchkit import cli
from serverkit import uvicorn_server


def _rows(out: str) -> list[str]:
    """The table's data lines (after the header and its rule)."""
    return out.splitlines()[2:]


def test_denials_on_a_real_server_are_rows_the_cli_lists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = init_site(tmp_path / "wf")
    state = tmp_path / "state"
    auth = AuthStore.open(state)
    viewer = auth.add_user("val")
    auth.grant("val", Role.VIEWER, "wf")
    revoked_id, revoked = auth.create_token("val", label="old")
    auth.revoke_token(revoked_id)
    with uvicorn_server([site.path], state) as base:
        url = f"{base}/db/wf"
        be = RemoteBackend(url, viewer)
        with pytest.raises(AccessDenied, match="needs role owner"):
            be.create_app(AppCreate(name="hello", executable="echo"))
        be.close()
        assert httpx.get(f"{url}/changes/marker", timeout=10).status_code == 401
        headers = {"Authorization": f"Bearer {revoked}"}
        assert httpx.get(f"{url}/changes/marker", headers=headers, timeout=10).status_code == 401

    state_args = ["--state", str(state)]
    code, out, err = cli(capsys, "server", "audit", *state_args)
    assert code == 0, err
    assert viewer not in out and revoked not in out  # never a token
    denied = [line for line in _rows(out) if "denied" in line]
    assert len(denied) == 3, out
    forbidden, missing, refused = denied
    assert "denied 403" in forbidden and "val" in forbidden and "wf" in forbidden
    assert "viewer" in forbidden and "owner" in forbidden and "POST /db/wf/apps" in forbidden
    assert "denied 401" in missing and "missing bearer token" in missing
    assert "GET /db/wf/changes/marker" in missing
    # A revoked token is still someone's: the row names the user and the token id.
    assert "denied 401" in refused and "val" in refused and f" {revoked_id} " in refused

    code, out, _ = cli(capsys, "server", "audit", "--user", "val", "--limit", "1", *state_args)
    assert code == 0 and len(_rows(out)) == 1 and "revoked token" in out  # the newest of val's
    code, out, _ = cli(capsys, "server", "audit", "--user", "val", *state_args)
    assert "POST /db/wf/apps" in out and "missing bearer token" not in out  # that one had no user
    code, out, _ = cli(capsys, "server", "audit", "--since", "1h", *state_args)
    assert code == 0 and len(_rows(out)) >= 3
    code, out, _ = cli(capsys, "server", "audit", "--since", "2999-01-01", *state_args)
    assert code == 0 and _rows(out) == []


def test_admin_changes_are_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = ["--state", str(tmp_path / "state")]
    cli(capsys, "server", "add-user", "alice", *state)
    cli(capsys, "server", "grant", "alice", "submitter", "--db", "wf", *state)
    cli(capsys, "token", "create", "alice", *state)
    cli(capsys, "token", "revoke", "2", *state)
    cli(capsys, "server", "revoke", "alice", "--db", "wf", *state)
    code, out, err = cli(capsys, "server", "audit", *state)
    assert code == 0, err
    events = [line.split()[2] for line in _rows(out)]
    assert events == ["add-user", "grant", "token-create", "token-revoke", "revoke"]
    assert all(" by " in line for line in _rows(out))  # who ran the command


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--since", "yesterday"], "--since 'yesterday'"),
        (["--since", "5 weeks"], "an age (30m"),
        (["--limit", "0"], "0 is not in the range"),
    ],
)
def test_bad_audit_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    state = ["--state", str(tmp_path / "state")]
    cli(capsys, "server", "add-user", "alice", *state)
    code, out, err = cli(capsys, "server", "audit", *argv, *state)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and says in err


def test_the_table_keeps_only_its_newest_rows(tmp_path: Path) -> None:
    store = AuthStore.open(tmp_path / "state", audit_keep=3)
    for i in range(7):
        store.record(AuditEvent("denied", status=401, path=f"/db/wf/{i}"))
    assert [e.path for e in store.audit(limit=100)] == ["/db/wf/4", "/db/wf/5", "/db/wf/6"]
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT count(*) FROM audit").fetchone() == (3,)


def test_an_older_auth_db_gets_the_table(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    file = state / "auth.db"
    # The auth.db of the first slice: users, tokens and grants, no audit table.
    with sqlite3.connect(file) as db:
        db.executescript(
            "CREATE TABLE users (name TEXT PRIMARY KEY, created_at TEXT NOT NULL);"
            "CREATE TABLE tokens (id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL,"
            " digest TEXT NOT NULL UNIQUE, label TEXT NOT NULL DEFAULT '',"
            " created_at TEXT NOT NULL, expires_at TEXT NOT NULL, revoked_at TEXT);"
            "CREATE TABLE grants (user TEXT NOT NULL, db TEXT NOT NULL, role TEXT NOT NULL,"
            " PRIMARY KEY (user, db));"
            "INSERT INTO users VALUES ('old', '2024-01-01T00:00:00+00:00');"
        )
    file.chmod(0o600)
    store = AuthStore.open(state, create=False)
    store.grant("old", Role.VIEWER, "wf")
    assert store.users() == ["old"]
    assert [(e.event, e.user, e.db, e.role) for e in store.audit()] == [
        ("grant", "old", "wf", "viewer")
    ]
    AuthStore.open(state, create=False)  # opening again changes nothing
    assert len(store.audit()) == 1
