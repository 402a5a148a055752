"""The README's quick start, run as written in a real bash on a fresh home directory.

The commands are read from README.md itself, so the test follows the README. Two lines need a
stand-in: ``source .venv/bin/activate`` becomes the activation of the venv running the tests
(wherever it is), and ``watch balsam ls`` becomes what a user watching does: ``balsam ls`` again
and again until the job says JOB_FINISHED.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from launchkit import gone
from waiting import eventually

BIN = Path(sys.executable).parent
README = Path(__file__).resolve().parents[2] / "README.md"
WATCH = """\
for _ in $(seq 600); do
  balsam ls > ls.txt
  grep -q JOB_FINISHED ls.txt && break
  sleep 0.1
done
cat ls.txt
"""


def quick_start() -> list[str]:
    """The command lines of the README's quick start block."""
    text = README.read_text()
    section = text[text.index("## Quick start") :]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, "the quick start has a bash block"
    return [line.split("  #")[0].rstrip() for line in block[1].splitlines() if line.strip()]


def script() -> str:
    """The quick start with the venv's activation and the watch loop standing in."""
    lines = quick_start()
    assert lines[0] == "source .venv/bin/activate"
    assert lines[-1] == "watch balsam ls"
    return "\n".join(["set -eu", f"source {BIN}/activate", *lines[1:-1], WATCH])


def test_the_quick_start_block_is_the_one_balsam_has_always_had() -> None:
    assert quick_start()[1:] == [
        "balsam init ~/myWorkflow",
        "source balsamactivate myWorkflow",
        'balsam app --name SayHello --executable "echo hello,"',
        "balsam job --name hi --workflow test --application SayHello --args 'world!' --yes",
        "balsam submit-launch -A MyProject -q DebugQueue -t 5 -n 1 --job-mode=mpi",
        "watch balsam ls",
    ]


def test_the_quick_start_runs_as_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BALSAM_", "VIRTUAL_ENV"))}
    # A fresh account: no ~/.balsam yet (BALSAM_HOME unset means ~/.balsam) and a plain PATH.
    env.update(HOME=str(home), PATH=f"{BIN}:/usr/local/bin:/usr/bin:/bin", PS1="$ ")
    done = subprocess.run(
        ["bash", "-c", script()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    launch = re.search(r"launch (\d+)", done.stdout)
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stderr == ""
        listing = done.stdout.splitlines()[-1].split()
        assert listing[1:] == ["hi", "test", "SayHello", "JOB_FINISHED"]
        (out,) = (home / "myWorkflow" / "data" / "test").glob(f"hi_{listing[0]}*/hi.out")
        assert out.read_text() == "hello, world!\n"
        assert (home / ".balsam" / "databases.txt").read_text().split() == [
            str(home / "myWorkflow")
        ]
    finally:
        if launch:
            _wait_gone(int(launch[1]))


def _wait_gone(pid: int, timeout: float = 30) -> None:
    """Let the background launcher (``--consume-all``) exit; kill it if it does not."""
    if not eventually(lambda: gone(pid), timeout):
        os.killpg(pid, signal.SIGKILL)
