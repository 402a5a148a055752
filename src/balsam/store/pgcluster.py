"""A private PostgreSQL cluster owned by one workflow database (``balsam init --db postgres``).

The cluster lives in ``<site>/balsamdb`` (mode 0700): ``data/`` (made by ``initdb``),
``server.log`` (the server's output) and ``pg_ctl.log`` (the output of the control commands).
It listens on ``database.listen_addresses`` of ``settings.yml`` (127.0.0.1 unless changed), on
a port chosen when it is made, and puts its unix socket in ``balsamdb``. Balsam's tables live
in the database ``balsam``.

Every connection needs a password (scram-sha-256; no ``trust`` line anywhere). The superuser
``postgres`` gets a random password at ``initdb`` (handed over in a 0600 file that is removed
at once, never on a command line), kept only in ``balsamdb/postgres.pgpass``: a libpq passfile
of mode 0600 that Balsam's connections name with ``passfile=`` (see
:meth:`balsam.config.Site.database_url`). A start is refused while that file can be read by
anyone but its owner. Roles for other users are :mod:`balsam.store.pgroles`.

What Balsam sets is written to ``data/balsam.conf`` (included by ``postgresql.conf``) and
``data/pg_hba.conf`` on every start, so a workflow directory that was moved, whose port was
taken by another program while the server was down, or whose listen addresses were changed,
still starts: a taken port is replaced by a free one and saved in ``settings.yml``. A cluster
made by an older Balsam (``trust``, no password file) gets a password on its next start.
``server.host`` names the host that started the server, so a site on a file system shared by
several login nodes is never started twice on the same files.

PostgreSQL refuses to run as root, so every operation that runs the server does too, with a
:class:`~balsam.errors.ConfigError` that says what to do instead. Servers are started by
``pg_ctl`` with their output in files, never pipes (a daemon holding a pipe blocks its reader).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from balsam.config import Site, save_settings, settings_path
from balsam.errors import ConfigError, DatabaseError
from balsam.store.pgsecrets import (
    check_secret,
    new_password,
    passfile_line,
    scram_verifier,
    write_secret,
)

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)

PG_ROOT = Path("/usr/lib/postgresql")
DB_NAME = "balsam"
SUPERUSER = "postgres"
HOST = "127.0.0.1"
START_TIMEOUT_S = 60
# Unix socket paths are limited to 107 bytes; ".s.PGSQL.65535" takes 15 of them.
MAX_SOCKET_DIR = 90
# Names the host whose server holds the cluster: a site on a shared file system may be used
# from several login nodes, and a server on another node looks "not running" from this one.
HOST_FILE = "server.host"
#: The superuser's password, as a libpq passfile (mode 0600) in ``balsamdb``; the name is
#: also in :meth:`balsam.config.Site.database_url`.
PASSFILE = "postgres.pgpass"
_ADDRESS = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9._:-]*)$")
ROOT_REFUSAL = (
    "PostgreSQL refuses to run as root: run 'balsam init --db postgres' as an ordinary user, "
    "or use --db-url with an existing server"
)


def pg_bin_dir() -> Path:
    """Directory of ``initdb`` and ``pg_ctl``: the newest /usr/lib/postgresql/N/bin, or PATH."""
    versions = [p.parent for p in PG_ROOT.glob("*/bin/initdb")]
    versions.sort(key=lambda b: _version_key(b.parent.name), reverse=True)
    for bin_dir in versions:
        if (bin_dir / "pg_ctl").exists():
            return bin_dir
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=str(Path(found).parent)):
        return Path(found).parent
    raise ConfigError(
        "PostgreSQL server programs (initdb, pg_ctl) not found: install PostgreSQL "
        "or put its bin directory on PATH"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def _refuse_root(action: str) -> None:
    if os.geteuid() == 0:
        raise ConfigError(f"PostgreSQL refuses to run as root: {action} as an ordinary user")


def check_can_create() -> None:
    """Raise ConfigError, before anything is made, when this process cannot own a cluster."""
    if os.geteuid() == 0:
        raise ConfigError(ROOT_REFUSAL)
    pg_bin_dir()


def data_dir(site: Site) -> Path:
    """The cluster's data directory."""
    return site.pg_dir / "data"


def create_cluster(site: Site) -> Site:
    """Make, start and fill a cluster for ``site``; returns the site with its database settings.

    On any failure the half-made cluster is stopped and removed before the error propagates.
    """
    check_can_create()
    bin_dir = pg_bin_dir()
    db = site.settings.database.model_copy(
        update={
            "kind": "postgres",
            "host": HOST,
            "port": free_port(),
            "user": SUPERUSER,
            "name": DB_NAME,
            "url": "",
        }
    )
    made = Site(path=site.path, settings=site.settings.model_copy(update={"database": db}))
    try:
        made.pg_dir.mkdir(mode=0o700)
        password = new_password()
        write_secret(passfile(made), passfile_line(SUPERUSER, password))
        _initdb(bin_dir, made, password)
        made = start(made)
        _create_database(made)
    except BaseException:
        _discard(made)
        raise
    return made


def _initdb(bin_dir: Path, site: Site, password: str) -> None:
    log = site.pg_dir / "initdb.log"
    # initdb reads the password from a file: on its command line any account would see it.
    pwfile = site.pg_dir / ".initdb-password"
    write_secret(pwfile, f"{password}\n")
    argv = [
        str(bin_dir / "initdb"),
        "-D",
        str(data_dir(site)),
        "-U",
        SUPERUSER,
        "--auth=scram-sha-256",
        f"--pwfile={pwfile}",
        "-E",
        "UTF8",
        "--no-locale",
    ]
    try:
        if _run_logged(argv, log, timeout=300) != 0:
            raise ConfigError(f"initdb failed: {_last_line(log)}")
    finally:
        pwfile.unlink(missing_ok=True)
    with (data_dir(site) / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# Written by Balsam: listen address, port and socket.\ninclude 'balsam.conf'\n"
        )


def _create_database(site: Site) -> None:
    import psycopg  # only here: status and start need no driver

    try:
        with psycopg.connect(admin_conninfo(site, "postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot create database {DB_NAME!r}: {_first_line(exc)}") from exc


def _discard(site: Site) -> None:
    if is_running(site):
        try:
            stop(site)
        except Exception:
            logger.exception("could not stop the half-made cluster in %s", site.pg_dir)
    shutil.rmtree(site.pg_dir, ignore_errors=True)


def is_running(site: Site) -> bool:
    """True when the cluster's postmaster (from ``postmaster.pid``) is alive."""
    return _postmaster_pid(site) is not None


def _postmaster_pid(site: Site) -> int | None:
    try:
        first = (data_dir(site) / "postmaster.pid").read_text().split("\n", 1)[0]
        pid = int(first)
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    cmdline = Path(f"/proc/{pid}/cmdline")
    # A stale pid file after a crash may name a pid the system has since reused.
    if cmdline.parent.exists():
        try:
            if b"postgres" not in cmdline.read_bytes():
                return None
        except OSError:
            return None
    return pid


def status(site: Site) -> str:
    """``running (pid N, 127.0.0.1:PORT)``, ``stopped``, or ``started on host H ...``."""
    pid = _postmaster_pid(site)
    if pid is None:
        elsewhere = _started_elsewhere(site)
        return f"started on host {elsewhere}, not here" if elsewhere else "stopped"
    db = site.settings.database
    return f"running (pid {pid}, {db.host}:{db.port})"


def start(site: Site) -> Site:
    """Start the cluster unless it runs; returns the site (its port changes if it was taken)."""
    if not data_dir(site).is_dir():
        raise ConfigError(f"{site.path} has no PostgreSQL cluster ({data_dir(site)} is missing)")
    has_password = passfile(site).exists()
    if has_password:
        # Also when it runs: the password of a running server may have been read already.
        check_secret(passfile(site))
    if is_running(site):
        if not has_password:
            raise ConfigError(
                f"the database server of {site.name} runs without a password (made by an older "
                "Balsam): stop it with 'balsam db stop'; the next start gives it one"
            )
        return site
    _refuse_if_elsewhere(site)
    _refuse_root("start the workflow database's server")
    addresses = listen_addresses(site)
    if not has_password:
        _give_password(site)
    site = _ensure_free_port(site)
    _write_conf(site, addresses)
    _write_hba(site, addresses)
    log = site.pg_dir / "server.log"
    argv = [
        str(pg_bin_dir() / "pg_ctl"),
        "-D",
        str(data_dir(site)),
        "-l",
        str(log),
        "-w",
        "-t",
        str(START_TIMEOUT_S),
        "start",
    ]
    if _run_logged(argv, site.pg_dir / "pg_ctl.log", timeout=START_TIMEOUT_S + 30) != 0:
        raise DatabaseError(f"the database server did not start: {_last_line(log)} (see {log})")
    (site.pg_dir / HOST_FILE).write_text(f"{socket.gethostname()}\n")
    logger.info("started PostgreSQL for %s on port %d", site.path, site.settings.database.port)
    return site


def stop(site: Site) -> bool:
    """Stop the cluster (fast shutdown: open sessions are ended); False if it was not running."""
    if not is_running(site):
        _refuse_if_elsewhere(site)
        return False
    _refuse_root("stop the workflow database's server")
    argv = [
        str(pg_bin_dir() / "pg_ctl"),
        "-D",
        str(data_dir(site)),
        "-m",
        "fast",
        "-w",
        "-t",
        str(START_TIMEOUT_S),
        "stop",
    ]
    log = site.pg_dir / "pg_ctl.log"
    if _run_logged(argv, log, timeout=START_TIMEOUT_S + 30) != 0:
        raise DatabaseError(f"the database server did not stop: {_last_line(log)} (see {log})")
    (site.pg_dir / HOST_FILE).unlink(missing_ok=True)
    return True


def _started_elsewhere(site: Site) -> str | None:
    """The other host whose server may hold the cluster (it left its pid file), if any."""
    if not (data_dir(site) / "postmaster.pid").exists():
        return None
    try:
        host = (site.pg_dir / HOST_FILE).read_text().strip()
    except OSError:
        return None
    return host if host and host != socket.gethostname() else None


def _refuse_if_elsewhere(site: Site) -> None:
    # Starting a second server on the same files from another node would corrupt them.
    host = _started_elsewhere(site)
    if host:
        raise ConfigError(
            f"the database server of {site.name} was started on host {host} and may still run "
            f"there: use it there, or stop it there with 'balsam db stop' (if {host} is down, "
            f"delete {data_dir(site) / 'postmaster.pid'})"
        )


def _ensure_free_port(site: Site) -> Site:
    port = site.settings.database.port
    if port and _port_is_free(port):
        return site
    new_port = free_port()
    logger.warning("port %d is taken; the database server moves to port %d", port, new_port)
    db = site.settings.database.model_copy(update={"port": new_port})
    moved = Site(path=site.path, settings=site.settings.model_copy(update={"database": db}))
    if settings_path(site.path).exists():
        save_settings(site.path, moved.settings)
    return moved


def _write_conf(site: Site, addresses: list[str]) -> None:
    socket_dir = _socket_dir(site)
    (data_dir(site) / "balsam.conf").write_text(
        f"listen_addresses = '{_quote(','.join(addresses))}'\n"
        f"port = {site.settings.database.port}\n"
        f"unix_socket_directories = '{_quote(socket_dir or '')}'\n"
        "unix_socket_permissions = 0700\n"
        "password_encryption = 'scram-sha-256'\n"
        "max_connections = 200\n"
    )


def _socket_dir(site: Site) -> str | None:
    """The unix socket's directory; None when its path would be too long for a socket."""
    sock_dir = str(site.pg_dir)
    # Too long a socket path stops the server from starting; TCP alone is enough then.
    return sock_dir if len(sock_dir.encode()) <= MAX_SOCKET_DIR else None


def listen_addresses(site: Site) -> list[str]:
    """``database.listen_addresses`` as a list; ConfigError for one PostgreSQL cannot take."""
    raw = site.settings.database.listen_addresses
    addresses = [part.strip() for part in raw.split(",")]
    bad = [a for a in addresses if not _ADDRESS.match(a)]
    if bad:
        raise ConfigError(
            f"{settings_path(site.path)}: database.listen_addresses: {bad[0]!r} is not an address "
            "(give host names or IP addresses separated by commas, or '*' for all)"
        )
    return addresses


def _write_hba(site: Site, addresses: list[str]) -> None:
    """Every connection needs a password: scram-sha-256 on the socket and on every address."""
    lines = [
        "# Written by Balsam on every start (edits are lost): every connection needs a",
        "# password, checked with scram-sha-256.",
        "local  all  all                scram-sha-256",
        "host   all  all  127.0.0.0/8   scram-sha-256",
        "host   all  all  ::1/128       scram-sha-256",
    ]
    if not all(_is_loopback(address) for address in addresses):
        # Launchers on compute nodes connect from addresses no setting can list in advance.
        lines.append("host   all  all  all           scram-sha-256")
    (data_dir(site) / "pg_hba.conf").write_text("\n".join(lines) + "\n")


def _is_loopback(address: str) -> bool:
    """Whether only this host can reach ``address`` (127.0.0.0/8, ::1, localhost)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a host name, or '*'


def passfile(site: Site) -> Path:
    """The libpq passfile (mode 0600) holding the superuser's password."""
    return site.pg_dir / PASSFILE


def _give_password(site: Site) -> None:
    """Give the superuser of a cluster made by an older Balsam (no password) a new one.

    The server is down: single-user mode sets it, reading the statement (a verifier, not the
    password) on its stdin. The passfile is written once that worked; until then the next
    start tries again.
    """
    password = new_password()
    statement = f"ALTER ROLE {SUPERUSER} PASSWORD '{scram_verifier(password)}'\n"
    argv = [str(pg_bin_dir() / "postgres"), "--single", "-D", str(data_dir(site)), "postgres"]
    log = site.pg_dir / "pg_ctl.log"
    with log.open("ab") as out:
        try:
            done = subprocess.run(
                argv, input=statement.encode(), stdout=out, stderr=subprocess.STDOUT, timeout=120
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DatabaseError(f"cannot set the superuser's password: {exc}") from exc
    if done.returncode != 0:
        raise DatabaseError(f"cannot set the superuser's password: {_last_line(log)}")
    write_secret(passfile(site), passfile_line(SUPERUSER, password))
    logger.warning(
        "the database server of %s had no password: it has a new one, kept in %s",
        site.name,
        passfile(site),
    )


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "''")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As the server does: a port whose old connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def admin_conninfo(site: Site, dbname: str = DB_NAME) -> str:
    """The libpq connection string of the superuser: the unix socket when there is one (it
    works whatever the listen addresses), else TCP to ``database.host``."""
    from psycopg.conninfo import make_conninfo

    db = site.settings.database
    return make_conninfo(
        host=_socket_dir(site) or db.host,
        port=db.port,
        user=SUPERUSER,
        dbname=dbname,
        passfile=str(passfile(site)),
        connect_timeout=10,
    )


@contextmanager
def admin_connection(site: Site) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to the database ``balsam`` as the superuser.

    ConfigError when the server does not run here; DatabaseError when it cannot be reached.
    """
    import psycopg

    if not is_running(site):
        raise ConfigError(
            f"the database server of {site.name} is not running: start it with 'balsam db start'"
        )
    check_secret(passfile(site))
    try:
        conn = psycopg.connect(admin_conninfo(site), autocommit=True)
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to the database server: {_first_line(exc)}") from exc
    with conn:
        yield conn


def _run_logged(argv: list[str], log: Path, timeout: float) -> int:
    """Run ``argv`` with its output appended to ``log`` (a file, so no daemon holds a pipe)."""
    with log.open("ab") as out:
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            out.write(f"{argv[0]}: timed out after {timeout:.0f} s\n".encode())
            return -1
        except OSError as exc:
            out.write(f"{argv[0]}: {exc}\n".encode())
            return -1
    return done.returncode


def _last_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    # pg_ctl ends with a generic summary; the server's reason is the last FATAL/ERROR line.
    for line in reversed(lines):
        if "FATAL" in line or "ERROR" in line or "error" in line:
            return line
    return lines[-1] if lines else "no output"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
