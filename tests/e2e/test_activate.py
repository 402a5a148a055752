"""``source balsamactivate NAME`` / ``source balsamdeactivate`` in a real bash.

The scripts are the ones installed next to the ``balsam`` command (the test venv's bin is put on
PATH, as an activated venv would), sourced by ``bash -c`` exactly as a user types them. Every
workflow database is made with ``balsam init``: embedded SQLite, and ``--db-url`` on the test
run's PostgreSQL server.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pgserver import PgServer, new_pg_database

BIN = Path(sys.executable).parent
SOURCES = Path(__file__).resolve().parents[2] / "src" / "balsam" / "shell"


def shell(script: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a non-interactive bash with the venv on PATH and a plain prompt."""
    env = {k: v for k, v in os.environ.items() if k != "BALSAM_DB_PATH"}
    env["PATH"] = f"{BIN}:/usr/local/bin:/usr/bin:/bin"
    # bash drops PS1 from the environment when not interactive: set it as a login would.
    return subprocess.run(
        ["bash", "-c", f"PS1='$ '\n{script}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


#: Makes a workflow database at a path with ``balsam init``; returns the URL it reports.
MakeSite = Callable[[Path], str]


@pytest.fixture(params=["sqlite", "postgres"])
def make_site(request: pytest.FixtureRequest) -> MakeSite:
    """``balsam init PATH``, or ``balsam init --db-url URL PATH`` on a new PostgreSQL database."""

    def make(path: Path) -> str:
        url = f"sqlite:///{path / 'balsam.db'}"
        options = ""
        if request.param == "postgres":
            server: PgServer = request.getfixturevalue("pg_server")
            url = new_pg_database(server).replace("postgresql+psycopg://", "postgresql://")
            options = f"--db-url {shlex.quote(url)}"
        done = shell(f"balsam init {options} {shlex.quote(str(path))}")
        assert done.returncode == 0, done.stderr
        return url

    return make


@pytest.fixture
def two_sites(tmp_path: Path, make_site: MakeSite) -> tuple[Path, Path]:
    """Two known workflow databases, ``alpha`` and ``beta``."""
    alpha, beta = tmp_path / "alpha", tmp_path / "sub" / "beta"
    make_site(alpha)
    make_site(beta)
    return alpha, beta


def test_installed_scripts_are_the_packaged_ones() -> None:
    for name in ("balsamactivate", "balsamdeactivate"):
        installed = BIN / name
        assert installed.is_file(), f"{name} is not installed next to balsam"
        assert os.access(installed, os.X_OK)
        assert installed.read_text() == (SOURCES / name).read_text(), f"stale {installed}"


def test_activate_by_name_sets_the_database_and_the_prompt(
    tmp_path: Path, make_site: MakeSite
) -> None:
    alpha = tmp_path / "alpha"
    url = make_site(alpha)
    done = shell('source balsamactivate alpha && balsam which && echo "PS1=$PS1"')
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines == [f"Workflow database: {alpha}", f"Database URL: {url}", "PS1=[alpha] $ "]


def test_activated_commands_work_on_that_database(two_sites: tuple[Path, Path]) -> None:
    done = shell(
        "source balsamactivate beta && "
        "balsam app --name SayHello --executable 'echo hello,' && balsam ls apps"
    )
    assert done.returncode == 0, done.stderr
    assert "SayHello" in done.stdout
    listed = shell("BALSAM_DB_PATH= ; source balsamactivate alpha && balsam ls apps")
    assert "SayHello" not in listed.stdout


def test_activate_by_path_remembers_it(tmp_path: Path, make_site: MakeSite) -> None:
    site = tmp_path / "elsewhere" / "wf"
    make_site(site)
    (tmp_path / "balsam-home" / "databases.txt").unlink()
    done = shell("source balsamactivate ./elsewhere/wf && echo $BALSAM_DB_PATH", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{site}\n"
    again = shell("source balsamactivate wf && balsam which --list")
    assert again.stdout == f"* wf  {site}\n"


def test_switching_and_deactivating_restore_the_prompt(two_sites: tuple[Path, Path]) -> None:
    _, beta = two_sites
    done = shell(
        "set -eu\n"
        "source balsamactivate alpha\n"
        "source balsamactivate beta\n"
        'echo "1 $PS1|$BALSAM_DB_PATH"\n'
        "source balsamdeactivate\n"
        'echo "2 $PS1|${BALSAM_DB_PATH:-none}"\n'
        "source balsamdeactivate\n"
        'echo "3 $PS1"\n'
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"1 [beta] $ |{beta}", "2 $ |none", "3 $ "]


def test_activate_works_without_a_prompt_under_set_u(two_sites: tuple[Path, Path]) -> None:
    done = shell(
        'unset PS1; set -u; source balsamactivate alpha && echo "[$PS1]"; '
        'source balsamdeactivate; echo "${PS1-unset}"'
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[[alpha] ]", ""]


def test_activate_leaves_no_helpers_in_the_shell(two_sites: tuple[Path, Path]) -> None:
    done = shell(
        "source balsamactivate alpha; source balsamactivate nosuch 2>/dev/null; "
        "declare -F | grep -c _balsam; set | grep -c '^_balsam_rc'"
    )
    assert done.stdout.split() == ["0", "0"]


def test_unknown_name_fails_without_leaving_the_shell(two_sites: tuple[Path, Path]) -> None:
    alpha, _ = two_sites
    done = shell(
        "set -u\n"
        "source balsamactivate alpha\n"
        "source balsamactivate nosuch\n"
        'echo "rc=$? still here: $PS1|$BALSAM_DB_PATH"\n'
    )
    assert done.stdout == f"rc=3 still here: [alpha] $ |{alpha}\n"
    assert done.stderr.splitlines() == [
        "balsam: error: no workflow database named 'nosuch' (see 'balsam which --list')"
    ]


def test_missing_argument_and_running_instead_of_sourcing(two_sites: tuple[Path, Path]) -> None:
    usage = shell('source balsamactivate; echo "rc=$?"')
    assert usage.stdout == "rc=2\n"
    assert usage.stderr.startswith("usage: source balsamactivate NAME")
    executed = shell("balsamactivate alpha")
    assert executed.returncode != 0
    assert "must be sourced" in executed.stderr
    executed = shell("balsamdeactivate")
    assert executed.returncode != 0
    assert "must be sourced" in executed.stderr


def test_activation_of_a_site_whose_server_cannot_start_changes_nothing(
    tmp_path: Path, make_site: MakeSite
) -> None:
    site = tmp_path / "owned"
    make_site(site)
    settings = site / "settings.yml"
    # A site that says it owns a cluster, but has none: 'balsam db start' must fail.
    settings.write_text(re.sub(r"kind: \w+", "kind: postgres", settings.read_text()))
    done = shell('source balsamactivate owned; echo "rc=$? ${BALSAM_DB_PATH:-none} $PS1"')
    assert done.stdout.startswith("rc=2 none $ "), done.stdout
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("balsam: error: ")
