"""The server's auth store: users, hashed expiring revocable tokens, grants, file modes."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from balsam.errors import AlreadyExists, ConfigError, NotFound, ValidationError
from balsam.server.auth import STATE_FILE, AuthStore, Role, digest


def test_state_is_private_and_tokens_are_stored_hashed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = AuthStore.open(state)
    assert (state.stat().st_mode & 0o777) == 0o700
    assert ((state / STATE_FILE).stat().st_mode & 0o777) == 0o600
    token = store.add_user("alice")
    assert len(token) >= 43
    principal = store.authenticate(token)
    assert principal is not None and principal.user == "alice"
    raw = (state / STATE_FILE).read_bytes()
    assert token.encode() not in raw
    with sqlite3.connect(state / STATE_FILE) as db:
        (stored,) = db.execute("SELECT digest FROM tokens").fetchone()
    assert stored == digest(token)


@pytest.mark.parametrize("target", ["dir", "file"])
def test_refuses_state_readable_by_others(tmp_path: Path, target: str) -> None:
    state = tmp_path / "state"
    AuthStore.open(state)
    (state if target == "dir" else state / STATE_FILE).chmod(0o755 if target == "dir" else 0o644)
    with pytest.raises(ConfigError, match="group and others must have no access"):
        AuthStore.open(state)


def test_expired_revoked_and_unknown_tokens_fail(tmp_path: Path) -> None:
    store = AuthStore.open(tmp_path / "s")
    first = store.add_user("bob")
    token_id, second = store.create_token("bob", days=1, label="laptop")
    assert store.authenticate(second) is not None
    store.revoke_token(token_id)
    store.revoke_token(token_id)  # twice: harmless
    assert store.authenticate(second) is None
    assert store.authenticate(first) is not None
    assert store.authenticate("not-a-token") is None
    assert store.authenticate("") is None
    with sqlite3.connect(store.path) as db:
        past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        db.execute("UPDATE tokens SET expires_at = ?", (past,))
    assert store.authenticate(first) is None
    now = datetime.now(UTC)
    assert [t.state(now) for t in store.list_tokens("bob")] == ["expired", "revoked"]
    with pytest.raises(NotFound):
        store.revoke_token(999)


def test_users_and_grants(tmp_path: Path) -> None:
    store = AuthStore.open(tmp_path / "s")
    store.add_user("carol")
    with pytest.raises(AlreadyExists):
        store.add_user("carol")
    with pytest.raises(ValidationError):
        store.add_user("bad name; rm -rf")
    with pytest.raises(NotFound):
        store.grant("nobody", Role.VIEWER, "site")
    with pytest.raises(NotFound):
        store.create_token("nobody")
    with pytest.raises(ValidationError):
        store.create_token("carol", days=0)
    assert store.role_of("carol", "site") is None
    store.grant("carol", Role.VIEWER, "site")
    store.grant("carol", Role.SUBMITTER, "site")
    assert store.role_of("carol", "site") is Role.SUBMITTER
    assert store.role_of("carol", "other") is None
    assert store.grants() == [("carol", "site", Role.SUBMITTER)]
    store.revoke_grant("carol", "site")
    assert store.role_of("carol", "site") is None


def test_roles_are_ordered() -> None:
    assert Role.OWNER.allows(Role.SUBMITTER) and Role.OWNER.allows(Role.VIEWER)
    assert Role.SUBMITTER.allows(Role.VIEWER) and not Role.SUBMITTER.allows(Role.OWNER)
    assert not Role.VIEWER.allows(Role.SUBMITTER)


def test_open_without_create_refuses_missing_state(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no server state"):
        AuthStore.open(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()
