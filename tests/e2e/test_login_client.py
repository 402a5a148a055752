"""`balsam login URL`: a client with no workflow database directory of its own (no
BALSAM_DB_PATH, no BALSAM_URL) uses the CLI and the Python API against a real uvicorn serving a
real database (SQLite and PostgreSQL); the token is checked before anything is saved, kept in
0600 files, renewed by logging in again, and forgotten by `balsam logout`.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from balsam.backends.local import LocalBackend
from balsam.config import Site, balsam_home
from balsam.schemas.apps import AppCreate
from balsam.server.auth import AuthStore, Role
from balsam.store.engine import make_engine
from launchkit import BALSAM, balsam
from serverkit import uvicorn_server


def _login(url: str, token: str) -> subprocess.CompletedProcess[str]:
    """`balsam login URL` with the token on standard input (how a script hands it over)."""
    return subprocess.run(
        [BALSAM, "login", url], input=token + "\n", capture_output=True, text=True, timeout=60
    )


def _files() -> list[Path]:
    home = balsam_home()
    return sorted(p for p in (home / "login.json", home / "login.token") if p.exists())


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    return line


@pytest.fixture
def served(site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Site, AuthStore]:
    """The active site, with an app, and a server state with users alice (submitter) and
    viewer; the client then has no active site."""
    local = LocalBackend(make_engine(site.database_url()))
    local.create_app(AppCreate(name="hello", executable="echo hello,"))
    local.close()
    monkeypatch.delenv("BALSAM_DB_PATH")
    return site, AuthStore.open(tmp_path / "state")


def test_a_client_without_a_site_works_through_balsam_login(
    served: tuple[Site, AuthStore], tmp_path: Path
) -> None:
    site, auth = served
    alice = auth.add_user("alice")
    auth.grant("alice", Role.SUBMITTER, site.name)
    with uvicorn_server([site.path], tmp_path / "state") as base:
        url = f"{base}/db/{site.name}"
        assert "balsam login" in _one_error_line(balsam("ls"))

        # A wrong token, or a server that is not there, saves nothing.
        assert _login(url, "not-a-token").returncode == 9
        assert _files() == []
        assert "cannot reach" in _one_error_line(_login("http://127.0.0.1:9/db/x", alice))
        assert _files() == []

        done = _login(url, alice)
        assert done.returncode == 0, done.stderr
        assert f"Logged in to {url} as alice (submitter)" in done.stdout
        assert [stat.S_IMODE(p.stat().st_mode) for p in _files()] == [0o600, 0o600]
        assert alice not in (balsam_home() / "login.json").read_text()

        made = balsam("job", "--name", "hi", "--workflow", "w", "--application", "hello",
                      "--args", "world!", "--yes")  # fmt: skip
        assert made.returncode == 0, made.stderr
        listed = balsam("ls")
        assert listed.returncode == 0, listed.stderr
        assert " hi " in listed.stdout and " w " in listed.stdout, listed.stdout
        status = balsam("status")
        assert f"{url} (Balsam server): 1 job(s)" in status.stdout, status.stderr
        shown = balsam("login")
        assert shown.returncode == 0 and "as alice (submitter)" in shown.stdout

        # The Python API finds the server the same way.
        api = subprocess.run(
            [sys.executable, "-c",
             "from balsam.api import Job; print(Job.objects.filter(workflow='w').count())"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert api.stdout.strip() == "1", api.stderr

        # A login file others can read is refused, with the fix named.
        token_file = balsam_home() / "login.token"
        token_file.chmod(0o644)
        assert "chmod 600" in _one_error_line(balsam("ls"))
        token_file.chmod(0o600)

        # Renewal: log in with a new token, and the old one can be revoked under it.
        (old,) = auth.list_tokens("alice")
        _, renewed = auth.create_token("alice")
        assert _login(url, renewed).returncode == 0
        auth.revoke_token(old.id)
        assert balsam("ls").returncode == 0

        assert balsam("logout").stdout.strip() == "Logged out"
        assert _files() == []
        assert "balsam login" in _one_error_line(balsam("ls"))


def test_an_active_site_and_balsam_url_come_before_the_login(
    served: tuple[Site, AuthStore], tmp_path: Path
) -> None:
    """The login is the fallback: an activated database (BALSAM_DB_PATH) means that one,
    and BALSAM_URL means its server."""
    site, auth = served
    token = auth.add_user("viewer")
    auth.grant("viewer", Role.VIEWER, site.name)
    with uvicorn_server([site.path], tmp_path / "state") as base:
        assert _login(f"{base}/db/{site.name}", token).returncode == 0
        other = tmp_path / "other"
        assert balsam("init", str(other)).returncode == 0
        env = {**os.environ, "BALSAM_DB_PATH": str(other)}
        local = subprocess.run([BALSAM, "status"], env=env, capture_output=True, text=True)
        assert f"{other}" in local.stdout and "Balsam server" not in local.stdout, local.stderr
        env = {**os.environ, "BALSAM_URL": "http://127.0.0.1:9/db/nowhere", "BALSAM_TOKEN": "x"}
        by_url = subprocess.run([BALSAM, "ls"], env=env, capture_output=True, text=True)
        # The retry layer says each repeat first; the last line is the error.
        assert by_url.returncode != 0
        assert (
            "cannot reach the Balsam server at http://127.0.0.1:9/db/nowhere"
            in (by_url.stderr.strip().splitlines()[-1])
        )


def test_an_owner_grants_and_revokes_roles_through_the_server(
    served: tuple[Site, AuthStore], tmp_path: Path
) -> None:
    """`balsam grant USER ROLE`, `balsam grants`, `balsam revoke USER` by an owner through a
    real server: bob can add jobs once granted and not after; a submitter cannot grant; every
    change is an audit row naming the owner; an unknown user or role is one line."""
    site, auth = served
    carol, bob = auth.add_user("carol"), auth.add_user("bob")
    auth.grant("carol", Role.OWNER, site.name)
    with uvicorn_server([site.path], tmp_path / "state") as base:
        url = f"{base}/db/{site.name}"
        assert _login(url, carol).returncode == 0
        done = balsam("grant", "bob", "submitter")
        assert done.returncode == 0 and done.stdout.strip() == f"bob is submitter of {site.name}"
        listed = balsam("grants")
        assert [line.split() for line in listed.stdout.splitlines()[2:]] == [
            ["bob", "submitter"], ["carol", "owner"],
        ]  # fmt: skip
        job = ["job", "--name", "b1", "--workflow", "w", "--application", "hello", "--yes"]
        env = {**os.environ, "BALSAM_URL": url, "BALSAM_TOKEN": bob}
        as_bob = subprocess.run([BALSAM, *job], env=env, capture_output=True, text=True)
        assert as_bob.returncode == 0, as_bob.stderr
        refused = subprocess.run(
            [BALSAM, "grant", "bob", "owner"], env=env, capture_output=True, text=True
        )
        assert refused.returncode == 9 and "needs role owner" in refused.stderr
        assert "no user 'nobody'" in _one_error_line(balsam("grant", "nobody", "viewer"))
        assert _one_error_line(balsam("grant", "bob", "king")).startswith("balsam: error:")
        assert balsam("revoke", "bob").returncode == 0
        again = subprocess.run([BALSAM, *job], env=env, capture_output=True, text=True)
        assert again.returncode == 9, again.stderr
    rows = [(e.event, e.user, e.detail) for e in auth.audit(limit=200) if e.event != "denied"]
    assert ("grant", "bob", "by carol (through the server)") in rows
    assert ("revoke", "bob", "by carol (through the server)") in rows
