"""``scripts/setup.sh`` on a Debian machine without python3-venv (venv's ensurepip missing).

The real script runs in a copy of the repository layout. What it calls on the machine (apt-get,
sudo, dpkg-query and a Python whose ``venv`` needs ensurepip, as Debian's does) are stand-ins on
PATH that record each call: installing packages for real is not something a test may do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[2] / "scripts" / "setup.sh"

#: A python3 as on Debian 12: ``import ensurepip`` and ``-m venv`` work only once the
#: python3-venv package is installed (marked by a file the fake apt-get writes).
FAKE_PYTHON = r"""#!/bin/bash
echo "python $*" >> "$CALLS"
if [[ "$1" == "-c" && "$2" == "import ensurepip" ]]; then
    [[ -e "$MACHINE/python3-venv" ]] || { echo "No module named 'ensurepip'" >&2; exit 1; }
    exit 0
fi
if [[ "$1" == "-m" && "$2" == "venv" ]]; then
    target="${@: -1}"
    mkdir -p "$target/bin"
    if [[ -e "$MACHINE/python3-venv" ]]; then
        cp "$MACHINE/venv-python" "$target/bin/python"
        exit 0
    fi
    # What Debian's venv leaves behind without ensurepip: a python, but no pip.
    printf '#!/bin/bash\necho "No module named pip" >&2; exit 1\n' > "$target/bin/python"
    chmod +x "$target/bin/python"
    echo "The virtual environment was not created: ensurepip is not available." >&2
    exit 1
fi
exit 2
"""
VENV_PYTHON = r"""#!/bin/bash
echo "venv-python $*" >> "$CALLS"
"""
FAKE_APT_GET = r"""#!/bin/bash
echo "apt-get $*" >> "$CALLS"
for arg in "$@"; do [[ "$arg" == python3-venv ]] && touch "$MACHINE/python3-venv"; done
exit 0
"""
FAKE_SUDO = """#!/bin/bash\nexec "$@"\n"""
FAKE_DPKG_QUERY = """#!/bin/bash\n[[ -e "$MACHINE/$3" ]] && echo -n "install ok installed"\n"""


def write_tool(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    """A repository copy (only what setup.sh needs) and the fake tools; returns its root."""
    (tmp_path / "repo" / "scripts").mkdir(parents=True)
    shutil.copy(SETUP, tmp_path / "repo" / "scripts" / "setup.sh")
    tools = tmp_path / "bin"
    tools.mkdir()
    for name, text in [
        ("python3", FAKE_PYTHON),
        ("apt-get", FAKE_APT_GET),
        ("sudo", FAKE_SUDO),
        ("dpkg-query", FAKE_DPKG_QUERY),
    ]:
        write_tool(tools / name, text)
    write_tool(tmp_path / "venv-python", VENV_PYTHON)
    return tmp_path


def run_setup(machine: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the copied setup.sh; returns its result and the calls it made, in order."""
    calls = machine / "calls.txt"
    calls.write_text("")
    env = {
        "PATH": f"{machine / 'bin'}:/usr/bin:/bin",
        "HOME": str(machine),
        "CALLS": str(calls),
        "MACHINE": str(machine),
    }
    done = subprocess.run(
        ["bash", str(machine / "repo" / "scripts" / "setup.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done, calls.read_text().splitlines()


def test_setup_installs_python3_venv_before_making_the_venv(machine: Path) -> None:
    done, calls = run_setup(machine)
    assert done.returncode == 0, done.stderr
    installs = [c for c in calls if c.startswith("apt-get") and "install" in c]
    assert len(installs) == 1 and installs[0].endswith(" python3-venv")
    assert calls.index(installs[0]) < calls.index("python -m venv --clear .venv")
    assert calls[-1] == "venv-python -m pip install -q -e ."
    # Run again: everything is there, so nothing is installed or made again.
    done, calls = run_setup(machine)
    assert done.returncode == 0, done.stderr
    assert [c for c in calls if not c.startswith("venv-python")] == []


def test_setup_remakes_a_venv_that_a_failed_run_left_without_pip(machine: Path) -> None:
    venv_bin = machine / "repo" / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    write_tool(venv_bin / "python", '#!/bin/bash\necho "No module named pip" >&2; exit 1\n')
    (machine / "python3-venv").touch()  # installed meanwhile
    done, calls = run_setup(machine)
    assert done.returncode == 0, done.stderr
    assert "python -m venv --clear .venv" in calls
    assert not [c for c in calls if c.startswith("apt-get")]
    assert os.access(venv_bin / "python", os.X_OK)
