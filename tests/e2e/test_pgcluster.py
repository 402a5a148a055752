"""A workflow database that owns its PostgreSQL cluster (``balsam init --db postgres``).

PostgreSQL refuses to run as root, and so does Balsam, with one clear line. The real path runs as
an ordinary user (``balsamtest``) the way such a user would: Balsam installed with pip into a venv
of the system Python (the test venv's Python may live under /root, which others cannot read),
then ``balsam init --db postgres``, ``source balsamactivate``, ``balsam db stop|status`` in fresh
shells, as that user, through ``setpriv``. The fixtures here are shared with
test_pg_security.py (what a second account can and cannot do to such a cluster).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from balsam.config import DatabaseSettings, Site, SiteSettings
from balsam.errors import ConfigError
from balsam.store import pgcluster
from pgserver import ensure_system_user

USER = "balsamtest"
SYSTEM_PYTHON = "/usr/bin/python3"
PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROOT_LINE = (
    "balsam: error: PostgreSQL refuses to run as root: run 'balsam init --db postgres' as an "
    "ordinary user, or use --db-url with an existing server"
)


def require_root() -> None:
    """These tests switch users, which needs root (CI runs as root)."""
    assert os.geteuid() == 0, "run the test suite as root: it runs PostgreSQL as another user"


@pytest.fixture(scope="session")
def ordinary_user() -> pwd.struct_passwd:
    """An unprivileged system account to own the cluster."""
    require_root()
    return ensure_system_user(USER, shell="/bin/bash")


#: The venv made by the first module that asks (a fixture shared by importing it is another
#: fixture to pytest, so the venv is kept here to be made once per session).
_VENVS: list[Path] = []


@pytest.fixture(scope="session")
def user_venv(ordinary_user: pwd.struct_passwd) -> Iterator[Path]:
    """A venv of the system Python with Balsam pip-installed from a copy of this checkout.

    The copy keeps pip's in-tree build files out of the checkout. Takes about 10 s (pip finds
    the dependencies in its cache); made once per test session and readable by everyone.
    """
    if _VENVS:
        yield _VENVS[0]
        return
    top = Path(tempfile.mkdtemp(prefix="balsam-e2e-venv-", dir="/tmp"))
    top.chmod(0o755)
    source = top / "source"
    source.mkdir()
    shutil.copy(PROJECT / "pyproject.toml", source)
    shutil.copy(PROJECT / "README.md", source)
    shutil.copytree(
        PROJECT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    venv = top / "venv"
    log = top / "pip.log"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    with log.open("w") as out:
        for argv in (
            [SYSTEM_PYTHON, "-m", "venv", str(venv)],
            [str(venv / "bin" / "pip"), "install", "-q", str(source)],
        ):
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
            if done.returncode != 0:
                pytest.fail(f"{' '.join(argv)} failed:\n{log.read_text()[-3000:]}")
    _VENVS.append(venv)
    yield venv
    _VENVS.clear()
    shutil.rmtree(top, ignore_errors=True)


@dataclass
class UserShell:
    """Runs bash scripts as an ordinary user (``balsamtest`` unless told), each in a fresh
    login-like shell."""

    venv: Path
    home: Path
    user: str = USER

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        """``bash -c script`` as the user, with the venv on PATH and HOME in the workspace."""
        env = [f"HOME={self.home}", f"PATH={self.venv / 'bin'}:/usr/bin:/bin", "LANG=C.UTF-8"]
        who = [f"--reuid={self.user}", f"--regid={self.user}", "--init-groups"]
        argv = ["setpriv", *who, "env", "-i"]
        return subprocess.run(
            [*argv, *env, "bash", "-c", f"PS1='$ '\n{script}"],
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )


@contextmanager
def workspace(venv: Path, owner: pwd.struct_passwd) -> Iterator[UserShell]:
    """A workspace in /tmp owned by ``owner``; any server left running is stopped after."""
    home = Path(tempfile.mkdtemp(prefix="balsam-e2e-user-", dir="/tmp"))
    home.chmod(0o755)
    os.chown(home, owner.pw_uid, owner.pw_gid)
    shell = UserShell(venv=venv, home=home, user=owner.pw_name)
    try:
        yield shell
    finally:
        for pid_file in home.glob("*/balsamdb/data/postmaster.pid"):
            shell.run(f"cd {pid_file.parents[2]} && BALSAM_DB_PATH=$PWD balsam db stop")
            if pid_file.exists():  # did not stop: end the server this test started, by its pid
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def user_shell(user_venv: Path, ordinary_user: pwd.struct_passwd) -> Iterator[UserShell]:
    """A workspace in /tmp owned by the user; any server left running is stopped after."""
    with workspace(user_venv, ordinary_user) as shell:
        yield shell


def settings_of(site: Path) -> dict[str, object]:
    """The ``database`` section of a site's settings.yml."""
    loaded = yaml.safe_load((site / "settings.yml").read_text())
    assert isinstance(loaded, dict)
    database = loaded["database"]
    assert isinstance(database, dict)
    return database


def server_setting(site: Path, name: str) -> str:
    """``SHOW name`` on the owned server, reached over TCP as a launcher would (with the
    site's password file, which root may read)."""
    port = settings_of(site)["port"]
    passfile = site / "balsamdb" / "postgres.pgpass"
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/balsam?passfile={passfile}"
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text(f"SHOW {name}")).scalar_one())
    finally:
        engine.dispose()


def test_root_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    require_root()
    done = subprocess.run(
        [str(BIN / "balsam"), "init", "--db", "postgres", str(tmp_path / "wf")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [ROOT_LINE]
    assert not (tmp_path / "wf").exists()
    assert not (tmp_path / "balsam-home" / "databases.txt").exists()


def test_owned_cluster_lives_with_the_workflow_database(user_shell: UserShell) -> None:
    site = user_shell.home / "wf"
    made = user_shell.run(f"balsam init --db postgres {site}")
    assert made.returncode == 0, made.stderr
    assert "source balsamactivate wf" in made.stdout
    db = settings_of(site)
    assert (db["kind"], db["host"], db["user"], db["name"]) == (
        "postgres",
        "127.0.0.1",
        "postgres",
        "balsam",
    )
    data = site / "balsamdb" / "data"
    assert data.stat().st_uid == pwd.getpwnam(USER).pw_uid
    assert data.stat().st_mode & 0o777 == 0o700
    assert server_setting(site, "listen_addresses") == "127.0.0.1"

    used = user_shell.run(
        'source balsamactivate wf && echo "PS1=$PS1" && balsam db status && '
        "balsam app --name SayHello --executable 'echo hello,'"
    )
    assert used.returncode == 0, used.stderr
    assert "PS1=[wf] $ " in used.stdout
    assert "Database server of wf: running (pid " in used.stdout

    stopped = user_shell.run("source balsamactivate wf && balsam db stop && balsam db status")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.splitlines()[-2:] == [
        "Database server of wf stopped",
        "Database server of wf: stopped",
    ]
    assert not (data / "postmaster.pid").exists()

    again = user_shell.run("source balsamactivate wf && balsam db status && balsam ls apps")
    assert again.returncode == 0, again.stderr
    assert "Database server of wf: running" in again.stdout
    assert "SayHello" in again.stdout
    assert settings_of(site)["port"] == db["port"]


def test_a_taken_port_moves_the_server_on_start(user_shell: UserShell) -> None:
    site = user_shell.home / "moving"
    assert user_shell.run(f"balsam init --db postgres {site}").returncode == 0
    old_port = settings_of(site)["port"]
    assert isinstance(old_port, int)
    assert user_shell.run(f"BALSAM_DB_PATH={site} balsam db stop").returncode == 0
    with socket.socket() as squatter:
        # The stopped server's closed connections may linger in TIME_WAIT on that port.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        started = user_shell.run("source balsamactivate moving && balsam db start && balsam which")
    assert started.returncode == 0, started.stderr
    new_port = settings_of(site)["port"]
    assert new_port != old_port
    assert (
        f"port {old_port} is taken; the database server moves to port {new_port}" in started.stderr
    )
    assert "already running" in started.stdout
    assert f"@127.0.0.1:{new_port}/balsam" in started.stdout
    assert server_setting(site, "port") == str(new_port)
    twice = user_shell.run(
        f"BALSAM_DB_PATH={site} balsam db stop; BALSAM_DB_PATH={site} balsam db stop"
    )
    assert twice.stdout.splitlines() == [
        "Database server of moving stopped",
        "Database server of moving was not running",
    ]


def test_missing_postgresql_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgcluster, "PG_ROOT", tmp_path / "nowhere")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        ConfigError, match=r"^PostgreSQL server programs \(initdb, pg_ctl\) not found"
    ):
        pgcluster.pg_bin_dir()


def test_a_stale_pid_file_does_not_count_as_running(tmp_path: Path) -> None:
    site = Site(path=tmp_path, settings=SiteSettings(database=DatabaseSettings(kind="postgres")))
    data = pgcluster.data_dir(site)
    data.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        # A live process that is not a postgres server (its pid was reused after a crash).
        (data / "postmaster.pid").write_text(f"{sleeper.pid}\n{data}\n")
        assert not pgcluster.is_running(site)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert pgcluster.status(site) == "stopped"


def test_a_server_started_on_another_host_is_not_started_twice(tmp_path: Path) -> None:
    site = Site(path=tmp_path, settings=SiteSettings(database=DatabaseSettings(kind="postgres")))
    data = pgcluster.data_dir(site)
    data.mkdir(parents=True)
    # Left by a server on another login node that shares this file system.
    (data / "postmaster.pid").write_text("4242\n")
    (site.pg_dir / "server.host").write_text("login2\n")
    assert pgcluster.status(site) == "started on host login2, not here"
    for action in (pgcluster.start, pgcluster.stop):
        with pytest.raises(ConfigError, match=r"started on host login2 .*'balsam db stop'"):
            action(site)
    assert (data / "postmaster.pid").read_text() == "4242\n"
