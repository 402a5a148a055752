"""What the batch-scheduler adapter tests share: the golden outputs of this directory, a
command runner that answers with them, a launch request, and the golden-script check.

The outputs are written in the tools' documented formats, not recorded (no PBS, LSF, Cobalt
or Flux runs here): README.md beside this file names where each format comes from."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from balsam.platform.schedulers.base import LaunchRequest
from balsam.platform.schedulers.commands import CommandResult

GOLDEN = Path(__file__).resolve().parent
#: What a temporary directory is written as in the golden scripts.
TMP = "@TMP@"


def golden(scheduler: str, name: str) -> str:
    """The text of ``<scheduler>/<name>`` in this directory."""
    return (GOLDEN / scheduler / name).read_text(encoding="utf-8")


def printed(scheduler: str, stdout: str = "", stderr: str = "", code: int = 0) -> CommandResult:
    """A command's result made of golden files (names; empty for nothing printed)."""
    return CommandResult(
        code,
        golden(scheduler, stdout) if stdout else "",
        golden(scheduler, stderr) if stderr else "",
    )


class Recorded:
    """A command runner that answers with given results and keeps what it was asked."""

    def __init__(self, *answers: CommandResult) -> None:
        self.answers = list(answers)
        self.argvs: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> CommandResult:
        self.argvs.append(list(argv))
        return self.answers.pop(0)


def request(tmp_path: Path, **fields: object) -> LaunchRequest:
    """A launch of 4 nodes for 30 minutes; the project needs quoting in a script."""
    values: dict[str, object] = {
        "project": "my proj; touch x",
        "queue": "debug",
        "wall_time_minutes": 30.0,
        "num_nodes": 4,
        "job_mode": "mpi",
        "site_path": tmp_path / "wf",
        "scripts_dir": tmp_path / "wf" / "qsubmit",
        "balsam_argv": ["/opt/balsam"],
        "job_name": "balsam-12",
    } | fields
    return LaunchRequest(**values)  # type: ignore[arg-type]


def assert_matches_golden_script(script: Path, tmp_path: Path, scheduler: str) -> None:
    """The script's text, with ``tmp_path`` written as ``@TMP@``, is ``<scheduler>/script.sh``."""
    text = script.read_text(encoding="utf-8").replace(str(tmp_path), TMP)
    assert text == golden(scheduler, "script.sh")
