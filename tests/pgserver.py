"""A throwaway PostgreSQL server for the test run (real server, started by the tests).

If ``BALSAM_TEST_PG_URL`` is set (``postgresql://user@host:port``), that server is used.
Otherwise a cluster is made with ``initdb`` under /tmp and started with ``pg_ctl``; as root the
cluster runs as the unprivileged user ``pgci`` (initdb refuses root). If no server can be had
the tests that need it fail: they never skip.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PG_BIN_CANDIDATES = [
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
]
TEST_USER = "pgci"
#: The migrated database every test database is cloned from (made once per test process).
TEMPLATE_DB = "balsam_test_template"
_counter = itertools.count()


def pg_bin() -> Path:
    """Directory holding initdb and pg_ctl."""
    for cand in PG_BIN_CANDIDATES:
        if Path(cand, "initdb").exists():
            return Path(cand)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_user(cmd: list[str], home: Path) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return [
        "setpriv",
        f"--reuid={TEST_USER}",
        f"--regid={TEST_USER}",
        "--init-groups",
        "env",
        f"HOME={home}",
        *cmd,
    ]


def _ensure_user() -> None:
    if os.geteuid() != 0:
        return
    ensure_system_user(TEST_USER)


def ensure_system_user(name: str, shell: str | None = None) -> pwd.struct_passwd:
    """The system account ``name``, made if missing. Test processes run in parallel (xdist):
    the check and the ``useradd`` are done under one lock, or two of them would both add it."""
    with open("/tmp/balsam-tests-useradd.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return pwd.getpwnam(name)
        except KeyError:
            argv = ["useradd", "--system", "--no-create-home", name]
            subprocess.run(argv + (["--shell", shell] if shell else []), check=True)
            return pwd.getpwnam(name)


@dataclass
class PgServer:
    """A running server and how to reach it."""

    host: str
    port: int
    user: str
    directory: Path | None = None

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL of database ``dbname``."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def stop(self) -> None:
        """Stop a server this module started."""
        if self.directory is None:
            return
        self.shut_down("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)

    def shut_down(self, mode: str = "fast") -> None:
        """Stop the server, keeping its data: ``fast`` (a restart: clients are disconnected)
        or ``immediate`` (a crash; with this test server's fsync and synchronous_commit off,
        the last commits may be lost, as on any server configured so)."""
        assert self.directory is not None, "only a server the tests started can be stopped"
        _pg_ctl(self.directory, "-m", mode, "-w", "stop", check=False)

    def start(self) -> None:
        """Start a server :meth:`shut_down` stopped."""
        assert self.directory is not None, "only a server the tests started can be started"
        _pg_ctl(self.directory, "-l", str(self.directory / "server.log"), "-w", "-t", "60", "start")


def _pg_ctl(directory: Path, *args: str, check: bool = True) -> None:
    command = [str(pg_bin() / "pg_ctl"), "-D", str(directory / "data"), *args]
    subprocess.run(_as_user(command, directory), capture_output=True, check=check)


def start_server() -> PgServer:
    """Start a private server (or return the one named by BALSAM_TEST_PG_URL)."""
    given = os.environ.get("BALSAM_TEST_PG_URL")
    if given:
        rest = given.split("://", 1)[1]
        user, _, hostport = rest.rpartition("@")
        host, _, port = hostport.split("/")[0].partition(":")
        return PgServer(host=host, port=int(port or 5432), user=user or "postgres")
    return start_owned_server()


def start_owned_server() -> PgServer:
    """Start a private server in /tmp that the caller may stop, crash and start again."""
    _ensure_user()
    directory = Path(tempfile.mkdtemp(prefix="balsam-pgtest-", dir="/tmp"))
    os.chmod(directory, 0o755)
    if os.geteuid() == 0:
        shutil.chown(directory, TEST_USER, TEST_USER)
    bin_dir = pg_bin()
    subprocess.run(
        _as_user(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(directory / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            directory,
        ),
        check=True,
        capture_output=True,
    )
    conf = directory / "data" / "postgresql.conf"
    with conf.open("a") as fh:
        fh.write(
            f"listen_addresses = '127.0.0.1'\nunix_socket_directories = '{directory}'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
        )
    return _start_on_a_free_port(directory, conf)


#: Tries before giving up when every port chosen was taken before the server could bind it.
PORT_TRIES = 5


def _start_on_a_free_port(directory: Path, conf: Path) -> PgServer:
    """Start the server; if another process took the chosen port first, choose again."""
    for attempt in range(1, PORT_TRIES + 1):
        port = free_port()
        with conf.open("a") as fh:
            fh.write(f"port = {port}\n")  # the last setting in the file wins
        server = PgServer(host="127.0.0.1", port=port, user="postgres", directory=directory)
        try:
            server.start()
            return server
        except subprocess.CalledProcessError as exc:
            log = (directory / "server.log").read_text(errors="replace")
            if "Address already in use" not in log or attempt == PORT_TRIES:
                raise RuntimeError(
                    f"the test PostgreSQL server did not start:\n{log[-2000:]}"
                ) from exc
            (directory / "server.log").rename(directory / f"server-try{attempt}.log")
    raise AssertionError("unreachable")


def new_pg_database(server: PgServer) -> str:
    """A fresh migrated database cloned from :data:`TEMPLATE_DB`; returns its URL.

    It lives here rather than in a conftest because ``from conftest import`` resolves to
    whichever conftest module pytest imported first, which differs between test directories.
    """
    from sqlalchemy import create_engine, text

    name = f"balsam_t{os.getpid()}_{next(_counter)}"
    admin = create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}"))
    admin.dispose()
    return server.url(name)
