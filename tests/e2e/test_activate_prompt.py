"""The prompt ``balsamactivate`` sets shows the workflow directory's name as it is.

A shell expands its prompt at every prompt: a name such as ``$(touch pwned)`` put there as
text would run its command each time. These tests activate such databases in a real bash and
a real zsh (installed by scripts/setup.sh --tests) and render the prompt as the shell would
(``${PS1@P}`` in bash, ``print -P`` in zsh).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
HOSTILE_NAMES = ["$(touch pwned)", "`touch pwned`", "a\\$b\\w", "100%d ${HOME}", "tab\there"]


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BALSAM_DB_PATH"}
    env["PATH"] = f"{BIN}:/usr/local/bin:/usr/bin:/bin"
    env["BALSAM_HOME"] = str(cwd / "home")
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_bash_shows_a_hostile_directory_name_and_runs_nothing(tmp_path: Path, name: str) -> None:
    site = tmp_path / name
    made = run(["balsam", "init", str(site)], tmp_path)
    assert made.returncode == 0, made.stderr
    script = (
        "PS1='$ '\n"
        f"source balsamactivate {shlex.quote(str(site))} || exit 9\n"
        'printf "%s\\n" "${PS1@P}"\n'
        "source balsamdeactivate\n"
        'printf "%s|%s\\n" "$PS1" "${_BALSAM_PROMPT_NAME-unset}"\n'
    )
    done = run(["bash", "-c", script], tmp_path)
    assert done.returncode == 0, done.stderr
    shown, restored = done.stdout.splitlines()
    assert shown == f"[{name}] $ "
    assert restored == "$ |unset"
    assert not (tmp_path / "pwned").exists()


def test_a_plain_name_is_put_in_the_prompt_as_text(tmp_path: Path) -> None:
    site = tmp_path / "alpha-1.v2"
    assert run(["balsam", "init", str(site)], tmp_path).returncode == 0
    script = f"PS1='$ '\nsource balsamactivate {shlex.quote(str(site))}\necho \"$PS1\"\n"
    done = run(["bash", "-c", script], tmp_path)
    assert done.stdout == "[alpha-1.v2] $ \n", done.stderr


@pytest.mark.parametrize("promptsubst", ["setopt promptsubst", "unsetopt promptsubst"])
def test_zsh_shows_a_hostile_directory_name_and_runs_nothing(
    tmp_path: Path, promptsubst: str
) -> None:
    name = "$(touch pwned) 100%d"
    site = tmp_path / name
    assert run(["balsam", "init", str(site)], tmp_path).returncode == 0
    script = (
        f"{promptsubst}\nPS1='$ '\n"
        f"source balsamactivate {shlex.quote(str(site))} || exit 9\n"
        'print -P -- "$PS1"\n'
    )
    done = run(["zsh", "-f", "-c", script], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"[{name}] $ \n"
    assert not (tmp_path / "pwned").exists()
