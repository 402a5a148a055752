"""A throwaway PostgreSQL server for the test run (real server, started by the tests).

If ``BALSAM_TEST_PG_URL`` is set (``postgresql://user@host:port``), that server is used.
Otherwise a cluster is made with ``initdb`` under /tmp and started with ``pg_ctl``; as root the
cluster runs as the unprivileged user ``pgci`` (initdb refuses root). If no server can be had
the tests that need it fail: they never skip.
"""

from __future__ import annotations

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
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", TEST_USER], check=True)


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
        subprocess.run(
            _as_user(
                [
                    str(pg_bin() / "pg_ctl"),
                    "-D",
                    str(self.directory / "data"),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                self.directory,
            ),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


def start_server() -> PgServer:
    """Start a private server (or return the one named by BALSAM_TEST_PG_URL)."""
    given = os.environ.get("BALSAM_TEST_PG_URL")
    if given:
        rest = given.split("://", 1)[1]
        user, _, hostport = rest.rpartition("@")
        host, _, port = hostport.split("/")[0].partition(":")
        return PgServer(host=host, port=int(port or 5432), user=user or "postgres")
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
    port = free_port()
    conf = directory / "data" / "postgresql.conf"
    with conf.open("a") as fh:
        fh.write(
            f"listen_addresses = '127.0.0.1'\nport = {port}\n"
            f"unix_socket_directories = '{directory}'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
        )
    subprocess.run(
        _as_user(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(directory / "data"),
                "-l",
                str(directory / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            directory,
        ),
        check=True,
        capture_output=True,
    )
    return PgServer(host="127.0.0.1", port=port, user="postgres", directory=directory)
