"""Nothing at rest lets another user in: an owned PostgreSQL cluster against a second account.

The cluster is made by ``balsam init --db postgres`` as the ordinary user ``balsamtest``, the
way test_pgcluster.py does (whose fixtures these tests share). The neighbour is a second local
account made for this module with ``useradd -m`` and removed with ``userdel -r`` after: what
another user of a shared login node has. It tries the server over TCP and the unix socket, with
no password and with wrong ones, reads the files, and tries ``COPY ... TO PROGRAM``; then,
given a copy of a password file by the owner (as ``balsam db add-user`` says to), it uses the
role it was granted, through Balsam's own commands and through psycopg.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import test_pgcluster
import yaml
from test_pgcluster import USER, UserShell, settings_of, workspace

from balsam.config import DatabaseSettings, SiteSettings, save_settings

# test_pgcluster's fixtures, where pytest looks for this module's (the venv is made once).
ordinary_user = test_pgcluster.ordinary_user
user_venv = test_pgcluster.user_venv
user_shell = test_pgcluster.user_shell

OTHER = "balsamother"
PROBE = """
import json, sys
import psycopg

params, statements = json.loads(sys.argv[1]), sys.argv[2:]
try:
    conn = psycopg.connect(connect_timeout=10, autocommit=True, **params)
except psycopg.Error as exc:
    print(json.dumps({"connected": False, "error": str(exc)}))
    raise SystemExit(0)
results = []
with conn:
    for statement in statements:
        try:
            cur = conn.execute(statement)
            rows = [[str(v) for v in row] for row in cur.fetchall()] if cur.description else []
            results.append({"rows": rows})
        except psycopg.Error as exc:
            results.append({"error": str(exc), "sqlstate": exc.sqlstate})
print(json.dumps({"connected": True, "results": results}))
"""
PERMISSION_DENIED = "42501"


@pytest.fixture(scope="module")
def other_account() -> Iterator[pwd.struct_passwd]:
    """A second local account with a home of its own (what a neighbour on the node has)."""
    assert os.geteuid() == 0, "run the test suite as root: it makes a second account"
    _remove_account()  # left by an interrupted run
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", OTHER], check=True)
    try:
        yield pwd.getpwnam(OTHER)
    finally:
        _remove_account()


def _remove_account() -> None:
    try:
        pwd.getpwnam(OTHER)
    except KeyError:
        return
    subprocess.run(["userdel", "-r", OTHER], check=False, capture_output=True)


@pytest.fixture(scope="module")
def other_shell(user_venv: Path, other_account: pwd.struct_passwd) -> UserShell:
    """Shells of the second account, in its own home."""
    return UserShell(venv=user_venv, home=Path(other_account.pw_dir), user=OTHER)


@pytest.fixture(scope="module")
def probe_script() -> Iterator[Path]:
    """A psycopg client any account can run: ``python PROBE key=value... STATEMENT``."""
    top = Path(tempfile.mkdtemp(prefix="balsam-e2e-probe-", dir="/tmp"))
    top.chmod(0o755)
    script = top / "probe.py"
    script.write_text(PROBE)
    script.chmod(0o644)
    yield script
    shutil.rmtree(top, ignore_errors=True)


@dataclass
class Owned:
    """A running owned cluster with an app, a job, a viewer ``alice`` and a submitter ``bob``."""

    shell: UserShell
    site: Path

    @property
    def port(self) -> int:
        """The server's port."""
        port = settings_of(self.site)["port"]
        assert isinstance(port, int)
        return port

    @property
    def passfile(self) -> Path:
        """The superuser's password file."""
        return self.site / "balsamdb" / "postgres.pgpass"

    def balsam(self, command: str) -> subprocess.CompletedProcess[str]:
        """``balsam COMMAND`` as the owner, on this site."""
        return self.shell.run(f"BALSAM_DB_PATH={self.site} balsam {command}")


@pytest.fixture(scope="module")
def owned(user_venv: Path, ordinary_user: pwd.struct_passwd) -> Iterator[Owned]:
    """One cluster for the tests that do not stop or break it (one init, ~3 s)."""
    with workspace(user_venv, ordinary_user) as shell:
        site = shell.home / "wf"
        made = shell.run(f"balsam init --db postgres {site}")
        assert made.returncode == 0, made.stderr
        filled = shell.run(
            f"export BALSAM_DB_PATH={site} && balsam app --name hello --executable 'echo hi' "
            "&& balsam job --name j1 --workflow w --application hello --yes "
            "&& balsam db add-user alice --role viewer && balsam db add-user bob --role submitter"
        )
        assert filled.returncode == 0, filled.stderr
        yield Owned(shell=shell, site=site)


def probe(shell: UserShell, script: Path, statement: str, **params: object) -> dict[str, Any]:
    """Run ``statement`` through psycopg as the shell's account: ``connected`` and either
    ``error`` (of the connection or the statement, with ``sqlstate``) or ``rows``."""
    return _first(probe_many(shell, script, [statement], **params))


def probe_many(
    shell: UserShell, script: Path, statements: list[str], **params: object
) -> dict[str, Any]:
    """Run ``statements`` on one connection as the shell's account (one Python start):
    ``connected``, and ``error`` or a list of ``results``."""
    done = shell.run(shlex.join(_probe_argv(script, statements, params)))
    assert done.returncode == 0, done.stderr
    return _answer(done.stdout)


def _probe_argv(script: Path, statements: list[str], params: dict[str, object]) -> list[str]:
    return ["python", str(script), json.dumps({k: str(v) for k, v in params.items()}), *statements]


def _answer(stdout: str) -> dict[str, Any]:
    found = json.loads(stdout.strip().splitlines()[-1])
    assert isinstance(found, dict)
    return found


def _first(found: dict[str, Any]) -> dict[str, Any]:
    return found if not found["connected"] else {"connected": True, **found["results"][0]}


def hand_over(owned: Owned, role: str, other: UserShell) -> Path:
    """Give the other account a copy of ``role``'s password file, mode 0600, as the owner
    would; returns the copy's path."""
    copy = other.home / f"{role}.pgpass"
    shutil.copy(owned.site / "balsamdb" / "users" / f"{role}.pgpass", copy)
    account = pwd.getpwnam(other.user)
    os.chown(copy, account.pw_uid, account.pw_gid)
    copy.chmod(0o600)
    return copy


def db_url(owned: Owned, role: str, copy: Path) -> str:
    """The ``--db-url`` that ``balsam db add-user`` tells ``role`` to use."""
    return f"postgresql://{role}@127.0.0.1:{owned.port}/balsam?passfile={copy}"


def superuser(owned: Owned) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection as ``postgres`` with the site's password file (root may read it)."""
    return psycopg.connect(
        host="127.0.0.1",
        port=owned.port,
        user="postgres",
        dbname="balsam",
        passfile=str(owned.passfile),
        autocommit=True,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused command (asserting there is exactly one)."""
    assert done.returncode != 0, done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("balsam: error: "), done.stderr
    return lines[0]


def test_the_password_is_only_in_one_private_file(owned: Owned) -> None:
    hba = (owned.site / "balsamdb" / "data" / "pg_hba.conf").read_text()
    assert "trust" not in hba.lower()
    rules = [ln.split() for ln in hba.splitlines() if ln.strip() and not ln.startswith("#")]
    assert [r[0] for r in rules] == ["local", "host", "host"]
    assert all(rule[-1] == "scram-sha-256" for rule in rules)

    info = owned.passfile.stat()
    assert info.st_mode & 0o777 == 0o600
    assert info.st_uid == pwd.getpwnam(USER).pw_uid
    password = owned.passfile.read_text().strip().split(":")[-1].encode()
    assert len(password) >= 40
    holders = [
        path
        for path in owned.site.rglob("*")
        if path.is_file() and "users" not in path.parts and password in path.read_bytes()
    ]
    assert holders == [owned.passfile]
    assert not (owned.site / "balsamdb" / ".initdb-password").exists()
    umask = os.umask(0)
    os.umask(umask)
    assert (owned.site / "settings.yml").stat().st_mode & 0o777 == 0o666 & ~umask
    with superuser(owned) as conn:
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'")
        assert str(stored.fetchone()).startswith("('SCRAM-SHA-256$4096:")


def test_a_second_account_cannot_connect_read_or_run_programs(
    owned: Owned, other_shell: UserShell, probe_script: Path
) -> None:
    marker = Path(f"/tmp/balsam-e2e-marker-{uuid.uuid4().hex}")
    copy = f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'"
    server = {"port": owned.port, "user": "postgres", "dbname": "balsam"}
    socket_dir = owned.site / "balsamdb"

    attempts = {
        "no password": probe(other_shell, probe_script, copy, host="127.0.0.1", **server),
        "wrong password": probe(
            other_shell, probe_script, copy, host="127.0.0.1", password="guess", **server
        ),
        "a granted role, wrong password": probe(
            other_shell,
            probe_script,
            "SELECT * FROM jobs",
            host="127.0.0.1",
            port=owned.port,
            user="alice",
            dbname="balsam",
            password="guess",
        ),
        "unix socket": probe(other_shell, probe_script, copy, host=socket_dir, **server),
    }
    assert not any(result["connected"] for result in attempts.values()), attempts
    assert "no password supplied" in attempts["no password"]["error"]
    assert (
        'password authentication failed for user "postgres"' in attempts["wrong password"]["error"]
    )
    assert 'failed for user "alice"' in attempts["a granted role, wrong password"]["error"]
    assert "Permission denied" in attempts["unix socket"]["error"]

    read = other_shell.run(f"cat {owned.passfile}; ls {socket_dir}")
    assert read.returncode != 0
    assert read.stdout == ""
    assert "Permission denied" in read.stderr
    assert not marker.exists()

    # The same statement from the owner's account does run the program: the check above
    # would have seen it.
    try:
        done = probe(
            owned.shell, probe_script, copy, host="127.0.0.1", passfile=owned.passfile, **server
        )
        assert done == {"connected": True, "rows": []}
        assert marker.exists()
    finally:
        marker.unlink(missing_ok=True)


def test_a_viewer_reads_jobs_and_cannot_write(
    owned: Owned, other_shell: UserShell, probe_script: Path
) -> None:
    copy = hand_over(owned, "alice", other_shell)
    site = other_shell.home / "view"
    made = other_shell.run(f"balsam init --db-url '{db_url(owned, 'alice', copy)}' {site}")
    assert made.returncode == 0, made.stderr
    text = (site / "settings.yml").read_text()
    assert f"passfile={copy}" in text
    assert copy.read_text().split(":")[-1].strip() not in text

    listed = other_shell.run(f"BALSAM_DB_PATH={site} balsam ls")
    assert listed.returncode == 0, listed.stderr
    assert " j1 " in listed.stdout
    added = other_shell.run(
        f"BALSAM_DB_PATH={site} balsam job --name j9 --workflow w --application hello --yes"
    )
    assert "permission denied for table jobs" in one_error_line(added)

    conn = {"host": "127.0.0.1", "port": owned.port, "user": "alice", "dbname": "balsam"}
    conn["passfile"] = str(copy)
    assert probe(other_shell, probe_script, "SELECT name FROM jobs", **conn)["rows"] == [["j1"]]
    refused = [
        "UPDATE jobs SET state = 'USER_KILLED'",
        "INSERT INTO apps (name, executable) VALUES ('x', 'true')",
        "DELETE FROM events",
        "CREATE TABLE mine (x int)",
        "COPY (SELECT 1) TO PROGRAM 'true'",
        "SELECT pg_read_file('/etc/hostname')",
    ]
    found = probe_many(other_shell, probe_script, refused, **conn)
    codes = [result.get("sqlstate") for result in found["results"]]
    assert codes == [PERMISSION_DENIED] * len(refused), found
    with superuser(owned) as admin:
        states = admin.execute("SELECT state FROM jobs WHERE name = 'j1'").fetchall()
    assert states != [("USER_KILLED",)]


def test_a_submitter_adds_and_kills_jobs_but_registers_no_apps(
    owned: Owned, other_shell: UserShell
) -> None:
    copy = hand_over(owned, "bob", other_shell)
    site = other_shell.home / "submit"
    made = other_shell.run(f"balsam init --db-url '{db_url(owned, 'bob', copy)}' {site}")
    assert made.returncode == 0, made.stderr
    on_site = f"BALSAM_DB_PATH={site} balsam"
    added = other_shell.run(f"{on_site} job --name by_bob --workflow w --application hello --yes")
    assert added.returncode == 0, added.stderr
    with superuser(owned) as admin:
        row = admin.execute("SELECT job_id FROM jobs WHERE name = 'by_bob'").fetchone()
    assert row is not None
    killed = other_shell.run(f"{on_site} kill --id {row[0]}")
    assert killed.returncode == 0, killed.stderr
    registered = other_shell.run(f"{on_site} app --name mine --executable true")
    assert "permission denied for table apps" in one_error_line(registered)
    seen = owned.balsam("ls --state USER_KILLED")
    assert "by_bob" in seen.stdout, seen.stderr


def test_users_are_listed_and_dropped(
    owned: Owned, other_shell: UserShell, probe_script: Path
) -> None:
    assert owned.balsam("db add-user dave --role owner").returncode == 0
    users = owned.balsam("db users")
    assert users.returncode == 0, users.stderr
    rows = [line.split() for line in users.stdout.splitlines()[2:]]
    assert rows == [
        ["alice", "viewer"],
        ["bob", "submitter"],
        ["dave", "owner"],
        ["postgres", "superuser"],
    ]
    copy = hand_over(owned, "dave", other_shell)
    conn = {"host": "127.0.0.1", "port": owned.port, "user": "dave", "dbname": "balsam"}
    before = probe(
        other_shell, probe_script, "SELECT count(*) FROM sessions", passfile=copy, **conn
    )
    assert before["connected"] and "error" not in before

    dropped = owned.balsam("db drop-user dave")
    assert dropped.stdout.strip() == "Dropped role dave from the database server of wf"
    assert not (owned.site / "balsamdb" / "users" / "dave.pgpass").exists()
    assert "dave" not in owned.balsam("db users").stdout
    after = probe(other_shell, probe_script, "SELECT 1", passfile=copy, **conn)
    assert not after["connected"]
    again = owned.balsam("db drop-user dave")
    assert one_error_line(again) == "balsam: error: no role 'dave' (see 'balsam db users')"
    assert again.returncode == 3


def test_grants_reach_tables_of_later_migrations(owned: Owned) -> None:
    with superuser(owned) as admin:
        try:
            # What a later migration does: a new table, made by the superuser.
            admin.execute("CREATE TABLE later_things (id serial PRIMARY KEY, x int)")
            has = "SELECT has_table_privilege(%s, %s, %s)"
            assert admin.execute(has, ("alice", "later_things", "SELECT")).fetchone() == (True,)
            assert admin.execute(has, ("bob", "later_things", "INSERT")).fetchone() == (False,)
            assert admin.execute(has, ("bob", "jobs", "INSERT")).fetchone() == (True,)
            # A grant lost (say, by a migration that rebuilt a table) comes back on upgrade.
            admin.execute("REVOKE INSERT ON jobs FROM balsam_submitter")
            assert admin.execute(has, ("bob", "jobs", "INSERT")).fetchone() == (False,)
            upgraded = owned.balsam("db upgrade")
            assert upgraded.returncode == 0, upgraded.stderr
            assert admin.execute(has, ("bob", "jobs", "INSERT")).fetchone() == (True,)
            assert admin.execute(has, ("alice", "jobs", "INSERT")).fetchone() == (False,)
        finally:
            admin.execute("DROP TABLE IF EXISTS later_things")


def test_bad_role_requests_are_one_line(owned: Owned, tmp_path: Path) -> None:
    requests = {
        "db add-user Bad-Name --role viewer": 2,
        "db add-user 1abc --role viewer": 2,
        f"db add-user {'a' * 64} --role viewer": 2,
        "db add-user postgres --role owner": 2,
        "db add-user pg_monitor --role viewer": 2,
        "db add-user balsam_owner --role viewer": 2,
        "db add-user eve": 2,
        "db add-user eve --role boss": 2,
        "db add-user alice --role viewer": 4,
        "db drop-user postgres": 2,
    }
    # One shell for them all: a marker, each request's stderr, then its exit code.
    on_site = f"BALSAM_DB_PATH={owned.site} balsam"
    done = owned.shell.run(
        "".join(f'echo @@; {on_site} {c} 2>&1 >/dev/null; echo "rc=$?"\n' for c in requests)
    )
    answers = done.stdout.split("@@\n")[1:]
    assert len(answers) == len(requests), done.stdout
    for (command, exit_code), answer in zip(requests.items(), answers, strict=True):
        *lines, code = answer.splitlines()
        assert code == f"rc={exit_code}", (command, answer)
        assert len(lines) == 1 and lines[0].startswith("balsam: error: "), (command, answer)
    assert "eve" not in owned.balsam("db users").stdout
    sqlite_site = owned.shell.home / "embedded"
    assert owned.shell.run(f"balsam init {sqlite_site}").returncode == 0
    refused = owned.shell.run(f"BALSAM_DB_PATH={sqlite_site} balsam db users")
    assert "uses embedded SQLite: roles are listed only on a server" in one_error_line(refused)


def test_settings_holding_a_password_are_private(
    owned: Owned, other_shell: UserShell, tmp_path: Path
) -> None:
    assert owned.balsam("db add-user erin --role owner").returncode == 0
    try:
        password = (owned.site / "balsamdb" / "users" / "erin.pgpass").read_text().split(":")[-1]
        url = f"postgresql://erin:{password.strip()}@127.0.0.1:{owned.port}/balsam"
        site = other_shell.home / "with-password"
        made = other_shell.run(f"umask 022 && balsam init --db-url '{url}' {site}")
        assert made.returncode == 0, made.stderr
        assert "erin:***@" in made.stdout
        assert (site / "settings.yml").stat().st_mode & 0o777 == 0o600
        assert (site / "data").stat().st_mode & 0o777 == 0o755  # the rest follows the umask
    finally:
        assert owned.balsam("db drop-user erin").returncode == 0

    # Rewritten (a moved port, say), a file keeps to the rule, even over a stale temporary.
    (tmp_path / "settings.yml.tmp").write_text("stale")
    (tmp_path / "settings.yml.tmp").chmod(0o644)
    secret = SiteSettings(database=DatabaseSettings(kind="url", url="postgresql://u:pw@h/db"))
    save_settings(tmp_path, secret)
    assert (tmp_path / "settings.yml").stat().st_mode & 0o777 == 0o600
    plain = SiteSettings(database=DatabaseSettings(kind="url", url="postgresql://u@h/db"))
    umask = os.umask(0o027)
    try:
        save_settings(tmp_path, plain)
    finally:
        os.umask(umask)
    assert (tmp_path / "settings.yml").stat().st_mode & 0o777 == 0o640


def test_a_password_file_others_can_read_is_refused(user_shell: UserShell) -> None:
    site = user_shell.home / "exposed"
    assert user_shell.run(f"balsam init --db postgres {site}").returncode == 0
    passfile = site / "balsamdb" / "postgres.pgpass"
    line = (
        f"balsam: error: refusing to use the password file {passfile}: other users have "
        f"access to it (mode 0644); run 'chmod 600 {passfile}'"
    )
    passfile.chmod(0o644)
    on_site = f"BALSAM_DB_PATH={site} balsam"
    for command in ("db start", "ls apps"):
        refused = user_shell.run(f"{on_site} {command}")
        assert one_error_line(refused) == line
        assert refused.returncode == 2
    assert user_shell.run(f"{on_site} db stop").returncode == 0
    refused = user_shell.run(f"{on_site} db start")
    assert one_error_line(refused) == line
    activated = user_shell.run("source balsamactivate exposed && echo activated")
    assert activated.returncode == 2 and "activated" not in activated.stdout
    assert activated.stderr.splitlines() == [line]
    assert user_shell.run(f"{on_site} db status").stdout.endswith(": stopped\n")

    passfile.chmod(0o600)
    started = user_shell.run(f"{on_site} db start && {on_site} ls apps")
    assert started.returncode == 0, started.stderr


def test_a_cluster_without_a_password_file_gets_a_new_password(
    user_shell: UserShell, probe_script: Path
) -> None:
    site = user_shell.home / "older"
    assert user_shell.run(f"balsam init --db postgres {site}").returncode == 0
    passfile = site / "balsamdb" / "postgres.pgpass"
    old = passfile.read_text().strip().split(":")[-1]
    passfile.unlink()  # as a cluster made by an older Balsam, which had none
    on_site = f"BALSAM_DB_PATH={site} balsam"
    running = user_shell.run(f"{on_site} db start")
    assert "runs without a password (made by an older Balsam)" in one_error_line(running)

    restarted = user_shell.run(f"{on_site} db stop && {on_site} db start && {on_site} ls apps")
    assert restarted.returncode == 0, restarted.stderr
    assert f"had no password: it has a new one, kept in {passfile}" in restarted.stderr
    assert passfile.stat().st_mode & 0o777 == 0o600
    assert passfile.read_text().strip().split(":")[-1] != old
    port = settings_of(site)["port"]
    with_old = probe(
        user_shell,
        probe_script,
        "SELECT 1",
        host="127.0.0.1",
        port=port,
        user="postgres",
        dbname="balsam",
        password=old,
    )
    assert not with_old["connected"]


def test_listen_addresses_reach_beyond_loopback_with_passwords_only(
    user_shell: UserShell, other_shell: UserShell, probe_script: Path
) -> None:
    site = user_shell.home / "wide"
    assert user_shell.run(f"balsam init --db postgres {site}").returncode == 0
    on_site = f"BALSAM_DB_PATH={site} balsam"
    assert user_shell.run(f"{on_site} db stop").returncode == 0
    _set_listen(site, "127.0.0.1, 10.200.0.1;rm -rf ~")
    refused = user_shell.run(f"{on_site} db start")
    assert "database.listen_addresses: '10.200.0.1;rm -rf ~' is not an address" in (
        one_error_line(refused)
    )

    # 10.200.0.1 stands for the login node's address on the compute network: it exists only
    # in a network namespace of this test's own, where the server is started.
    _set_listen(site, "127.0.0.1,10.200.0.1")
    started = subprocess.run(
        [
            "unshare",
            "--net",
            "--",
            "bash",
            "-c",
            "ip link set lo up && ip addr add 10.200.0.1/32 dev lo && exec "
            + shlex.join(_as(user_shell, f"{on_site} db start")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    pid = int((site / "balsamdb" / "data" / "postmaster.pid").read_text().split()[0])
    netns = f"--net=/proc/{pid}/ns/net"
    hba = (site / "balsamdb" / "data" / "pg_hba.conf").read_text()
    assert "host   all  all  all           scram-sha-256" in hba
    assert "trust" not in hba

    server = {"host": "10.200.0.1", "port": settings_of(site)["port"], "dbname": "balsam"}
    passfile = site / "balsamdb" / "postgres.pgpass"
    show = "SHOW listen_addresses"
    owner = _probe_in(
        netns, user_shell, probe_script, show, user="postgres", passfile=passfile, **server
    )
    assert owner == {"connected": True, "rows": [["127.0.0.1,10.200.0.1"]]}
    for extra in ({}, {"password": "guess"}):
        other = _probe_in(
            netns, other_shell, probe_script, show, user="postgres", **server, **extra
        )
        assert not other["connected"], other
    assert user_shell.run(f"{on_site} db stop").returncode == 0


def _set_listen(site: Path, addresses: str) -> None:
    settings = yaml.safe_load((site / "settings.yml").read_text())
    settings["database"]["listen_addresses"] = addresses
    # Written in place, so the file keeps its owner.
    (site / "settings.yml").write_text(yaml.safe_dump(settings, sort_keys=False))


def _as(shell: UserShell, script: str) -> list[str]:
    """The argv that runs ``script`` as the shell's user, the way UserShell.run does."""
    env = [f"HOME={shell.home}", f"PATH={shell.venv / 'bin'}:/usr/bin:/bin", "LANG=C.UTF-8"]
    who = [f"--reuid={shell.user}", f"--regid={shell.user}", "--init-groups"]
    return ["setpriv", *who, "env", "-i", *env, "bash", "-c", f"cd {shell.home} && {script}"]


def _probe_in(
    netns: str, shell: UserShell, script: Path, statement: str, **params: object
) -> dict[str, Any]:
    """:func:`probe` from inside the network namespace ``netns``."""
    command = shlex.join(_probe_argv(script, [statement], params))
    done = subprocess.run(
        ["nsenter", netns, *_as(shell, command)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return _first(_answer(done.stdout))


def test_init_refuses_an_empty_path(tmp_path: Path) -> None:
    done = subprocess.run(
        ["balsam", "init", ""], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "balsam: error: PATH is empty: give the directory to create, e.g. ~/myWorkflow"
    ]
    assert list(tmp_path.iterdir()) == []
