"""``balsam init``, ``balsam which`` and ``balsam db`` through the real ``balsam`` command.

Each command runs as a user would run it (a subprocess of the installed console script), on
SQLite and against the test run's real PostgreSQL server (``--db-url``).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from balsam.cli.main import main
from pgserver import PgServer, free_port

BIN = Path(sys.executable).parent


@dataclass
class Result:
    """What a command left: its exit code and output."""

    returncode: int
    stdout: str
    stderr: str


def balsam(*args: str, cwd: Path | None = None, db: Path | None = None) -> Result:
    """Run ``balsam ARGS`` in this process (the console script's ``main``), capturing output.

    ``db`` becomes BALSAM_DB_PATH. In-process keeps the many small checks fast; the happy
    paths also run through the installed command (:func:`balsam_command`).
    """
    out, err = io.StringIO(), io.StringIO()
    saved = os.environ.pop("BALSAM_DB_PATH", None)
    if db is not None:
        os.environ["BALSAM_DB_PATH"] = str(db)
    try:
        with contextlib.chdir(cwd or Path.cwd()), redirect_stdout(out), redirect_stderr(err):
            code = main(list(args))
    finally:
        os.environ.pop("BALSAM_DB_PATH", None)
        if saved is not None:
            os.environ["BALSAM_DB_PATH"] = saved
    return Result(code, out.getvalue(), err.getvalue())


def balsam_command(*args: str, db: Path | None = None) -> Result:
    """Run the installed ``balsam`` command; ``db`` becomes BALSAM_DB_PATH."""
    env = dict(os.environ)
    env.pop("BALSAM_DB_PATH", None)
    if db is not None:
        env["BALSAM_DB_PATH"] = str(db)
    done = subprocess.run(
        [str(BIN / "balsam"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(result: Result) -> str:
    """Non-zero exit, exactly one line on stderr (no traceback); returns that line."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("balsam: error: "), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def known_names() -> list[str]:
    """What ``balsam which --list`` shows, one database name per line."""
    out = balsam("which", "--list").stdout
    if out.startswith("No known workflow databases"):
        return []
    return [line[2:].split()[0] for line in out.splitlines()]


def empty_pg_database(server: PgServer, name: str) -> str:
    """A new, empty (never migrated) database on the test server; its user-facing URL."""
    admin = create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return server.url(name).replace("postgresql+psycopg://", "postgresql://")


def test_init_sqlite_makes_a_usable_site(tmp_path: Path) -> None:
    result = balsam_command("init", str(tmp_path / "wf"))
    assert result.returncode == 0, result.stderr
    assert "source balsamactivate wf" in result.stdout
    site = tmp_path / "wf"
    assert {p.name for p in site.iterdir()} >= {"settings.yml", "balsam.db", "data", "log"}
    shown = balsam_command("which", db=site)
    assert shown.returncode == 0, shown.stderr
    assert str(site) in shown.stdout
    assert f"sqlite:///{site / 'balsam.db'}" in shown.stdout
    app = balsam_command("app", "--name", "SayHello", "--executable", "echo hello,", db=site)
    assert app.returncode == 0, app.stderr
    assert "SayHello" in balsam_command("ls", "apps", db=site).stdout


def test_init_with_db_url_builds_the_schema_on_the_server(
    tmp_path: Path, pg_server: PgServer
) -> None:
    url = empty_pg_database(pg_server, f"balsam_init_{os.getpid()}")
    result = balsam_command("init", "--db-url", url, str(tmp_path / "shared"))
    assert result.returncode == 0, result.stderr
    assert "source balsamactivate shared" in result.stdout
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"alembic_version", "apps", "jobs"} <= tables
    shown = balsam("which", db=tmp_path / "shared")
    assert url in shown.stdout
    assert not (tmp_path / "shared" / "balsam.db").exists()
    app = balsam("app", "--name", "Remote", "--executable", "true", db=tmp_path / "shared")
    assert app.returncode == 0, app.stderr
    # A second site on the same server sees the same apps: it is one workflow database.
    again = balsam("init", "--db-url", url, str(tmp_path / "second"))
    assert again.returncode == 0, again.stderr
    assert "Remote" in balsam("ls", "apps", db=tmp_path / "second").stdout


def test_which_list_marks_the_active_site_and_name_resolves(tmp_path: Path) -> None:
    assert balsam("which", "--list").stdout.startswith("No known workflow databases")
    for name in ("alpha", "beta"):
        assert balsam("init", str(tmp_path / name)).returncode == 0
    assert known_names() == ["alpha", "beta"]
    listed = balsam("which", "--list", db=tmp_path / "beta").stdout.splitlines()
    assert listed[0].startswith("  alpha") and listed[0].endswith(str(tmp_path / "alpha"))
    assert listed[1].startswith("* beta") and listed[1].endswith(str(tmp_path / "beta"))
    by_name = balsam("which", "--name", "alpha")
    assert by_name.returncode == 0
    assert by_name.stdout == f"{tmp_path / 'alpha'}\n"
    by_path = balsam("which", "--name", "beta", cwd=tmp_path)
    assert by_path.stdout == f"{tmp_path / 'beta'}\n"


def test_which_name_by_path_remembers_the_site(tmp_path: Path) -> None:
    assert balsam("init", str(tmp_path / "moved")).returncode == 0
    (tmp_path / "balsam-home" / "databases.txt").unlink()
    assert known_names() == []
    by_path = balsam("which", "--name", "./moved", cwd=tmp_path)
    assert by_path.stdout == f"{tmp_path / 'moved'}\n"
    assert known_names() == ["moved"]


def test_two_sites_with_one_name_are_told_apart_by_path(tmp_path: Path) -> None:
    assert balsam("init", str(tmp_path / "a" / "wf")).returncode == 0
    second = balsam("init", str(tmp_path / "b" / "wf"))
    assert f"source balsamactivate {tmp_path / 'b' / 'wf'}" in second.stdout
    line = assert_one_line_error(balsam("which", "--name", "wf"))
    assert "several" in line and str(tmp_path / "a" / "wf") in line


def test_init_refuses_a_non_empty_directory_and_leaves_it_alone(tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    line = assert_one_line_error(balsam("init", str(target)))
    assert "not empty" in line
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert known_names() == []


def test_init_refuses_an_existing_site(tmp_path: Path) -> None:
    assert balsam("init", str(tmp_path / "wf")).returncode == 0
    before = sorted(p.name for p in (tmp_path / "wf").iterdir())
    line = assert_one_line_error(balsam("init", str(tmp_path / "wf")))
    assert "already" in line
    assert sorted(p.name for p in (tmp_path / "wf").iterdir()) == before


def test_init_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    line = assert_one_line_error(balsam("init", str(tmp_path / "file")))
    assert "not a directory" in line
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--db-url", "not-a-url"], "bad --db-url"),
        (["--db-url", "mysql://u@h/db"], "bad --db-url"),
        (["--db", "postgres", "--db-url", "postgresql://u@h/db"], "either --db or --db-url"),
        (["--db", "oracle"], "'oracle' is not one of 'sqlite', 'postgres'"),
        (["--bogus"], "No such option '--bogus'"),
    ],
)
def test_init_rejects_bad_options_and_makes_nothing(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    assert expected in assert_one_line_error(balsam("init", *args, str(tmp_path / "wf")))
    assert not (tmp_path / "wf").exists()


def test_init_against_an_unreachable_server_leaves_nothing(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/balsam"
    line = assert_one_line_error(balsam("init", "--db-url", url, str(tmp_path / "new" / "wf")))
    assert "cannot build the database" in line
    assert not (tmp_path / "new").exists()
    # An empty directory the user made is kept, and stays empty.
    (tmp_path / "mine").mkdir()
    assert_one_line_error(balsam("init", "--db-url", url, str(tmp_path / "mine")))
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())
    assert known_names() == []


def test_init_never_echoes_the_password_of_a_url(tmp_path: Path) -> None:
    url = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/balsam"
    line = assert_one_line_error(balsam("init", "--db-url", url, str(tmp_path / "wf")))
    assert "cannot build the database at postgresql://postgres:***@127.0.0.1" in line
    assert "s3cret" not in line
    bad = assert_one_line_error(balsam("init", "--db-url", "mysql://u:s3cret@h/db", str(tmp_path)))
    assert "mysql://u:***@h/db" in bad


def test_which_without_an_active_site_is_one_line(tmp_path: Path) -> None:
    line = assert_one_line_error(balsam("which"))
    assert "no active workflow database" in line
    missing = assert_one_line_error(balsam("which", db=tmp_path / "gone"))
    assert "does not exist" in missing
    unknown = assert_one_line_error(balsam("which", "--name", "nosuch"))
    assert "no workflow database named 'nosuch'" in unknown
    assert not (tmp_path / "balsam-home").exists()


def test_db_commands_on_a_site_without_its_own_server(tmp_path: Path) -> None:
    assert balsam("init", str(tmp_path / "wf")).returncode == 0
    status = balsam("db", "status", db=tmp_path / "wf")
    assert status.returncode == 0
    assert "no database server to manage" in status.stdout
    for action in ("start", "stop"):
        line = assert_one_line_error(balsam("db", action, db=tmp_path / "wf"))
        assert "no database server to manage" in line
    quiet = balsam("db", "start", "--quiet", db=tmp_path / "wf")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert "no active workflow database" in assert_one_line_error(balsam("db", "status"))
