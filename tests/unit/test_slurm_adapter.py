"""The Slurm adapter's own logic: the script it writes, the commands it runs and how it reads
their output. Outputs are as Slurm 22.05 prints them (recorded from the test cluster); the
adapter's runs against a real Slurm are in tests/e2e/test_slurm_submit.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from balsam.errors import SchedulerError
from balsam.platform.schedulers import get_scheduler
from balsam.platform.schedulers.base import LaunchRequest
from balsam.platform.schedulers.slurm import (
    BatchState,
    CommandResult,
    SlurmScheduler,
    parse_status,
    safety_margin_minutes,
    slurm_time,
)


class Recorded:
    """A command runner that answers with recorded outputs and keeps what it was asked."""

    def __init__(self, *answers: CommandResult) -> None:
        self.answers = list(answers)
        self.argvs: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> CommandResult:
        self.argvs.append(list(argv))
        return self.answers.pop(0)


def request(tmp_path: Path, **fields: object) -> LaunchRequest:
    values: dict[str, object] = {
        "project": "my proj; touch x",
        "queue": "debug",
        "wall_time_minutes": 30.0,
        "num_nodes": 4,
        "job_mode": "mpi",
        "site_path": tmp_path / "wf",
        "scripts_dir": tmp_path / "wf" / "qsubmit",
        "balsam_argv": ["/opt/balsam"],
    } | fields
    return LaunchRequest(**values)  # type: ignore[arg-type]


def test_the_script_asks_for_the_allocation_and_runs_the_launcher_inside_it(
    tmp_path: Path,
) -> None:
    runner = Recorded(CommandResult(0, "4242\n", ""))
    submission = SlurmScheduler(runner).submit(request(tmp_path, sched_flags=("--qos=high",)))
    assert submission.launch_id == "4242"
    text = submission.script.read_text()
    assert "#SBATCH --nodes=4\n" in text and "#SBATCH --exclusive\n" in text
    assert "#SBATCH --time=0-00:30:00\n" in text
    assert "#SBATCH --account='my proj; touch x'\n" in text
    assert "#SBATCH --partition=debug\n" in text
    # The launcher stops three minutes before Slurm's kill.
    assert text.rstrip().endswith(
        "exec /opt/balsam launcher --consume-all --job-mode mpi --time-limit-minutes 27"
    )
    assert runner.argvs == [["sbatch", "--parsable", "--qos=high", str(submission.script)]]
    assert "--qos" not in text


def test_a_refused_submission_is_one_line_with_slurm_s_reason(tmp_path: Path) -> None:
    refusal = "sbatch: error: Batch job submission failed: Invalid partition name specified\n"
    runner = Recorded(CommandResult(1, "", refusal))
    with pytest.raises(
        SchedulerError, match=r"sbatch refused the launcher job: .*Invalid partition"
    ):
        SlurmScheduler(runner).submit(request(tmp_path, queue="nosuch"))


def test_statuses_are_read_and_translated_and_forgotten_jobs_are_gone() -> None:
    out = CommandResult(0, "17 PENDING\n18 RUNNING\n19 COMPLETED\n20 TIMEOUT\n21 NODE_FAIL\n", "")
    ids = ["17", "18", "19", "20", "21", "22"]
    assert parse_status(out, ids) == {
        "17": BatchState.QUEUED,
        "18": BatchState.RUNNING,
        "19": BatchState.FINISHED,
        "20": BatchState.FINISHED,
        "21": BatchState.FAILED,
        "22": BatchState.GONE,
    }
    forgotten = CommandResult(1, "", "slurm_load_jobs error: Invalid job id specified\n")
    assert parse_status(forgotten, ["5"]) == {"5": BatchState.GONE}
    with pytest.raises(SchedulerError, match="squeue failed"):
        parse_status(
            CommandResult(1, "", "squeue: error: Unable to contact slurm controller\n"), ["5"]
        )


def test_cancel_runs_scancel_and_an_ended_job_is_no_error() -> None:
    runner = Recorded(
        CommandResult(0, "", ""),
        CommandResult(
            1, "", "scancel: error: Kill job error on job id 9: Invalid job id specified\n"
        ),
    )
    scheduler = SlurmScheduler(runner)
    scheduler.cancel("8")
    scheduler.cancel("9")
    assert runner.argvs == [["scancel", "8"], ["scancel", "9"]]


def test_wall_times_and_margins() -> None:
    assert slurm_time(5) == "0-00:05:00"
    assert slurm_time(0.05) == "0-00:00:03"
    assert slurm_time(1500.5) == "1-01:00:30"
    assert safety_margin_minutes(1) == 0.5
    assert safety_margin_minutes(5) == 0.5
    assert safety_margin_minutes(30) == 3
    assert safety_margin_minutes(600) == 5


def test_slurm_is_chosen_by_its_short_name() -> None:
    assert isinstance(get_scheduler("slurm"), SlurmScheduler)


def test_the_job_is_named_as_asked_so_it_can_be_found_by_name(tmp_path: Path) -> None:
    runner = Recorded(CommandResult(0, "77\n", ""), CommandResult(0, "77\n", ""))
    scheduler = SlurmScheduler(runner)
    text = scheduler.submit(request(tmp_path, job_name="balsam-12")).script.read_text()
    assert "#SBATCH --job-name=balsam-12\n" in text
    assert scheduler.find("balsam-12") == ["77"]
    assert runner.argvs[-1] == [
        "squeue", "-h", "--me", "--name", "balsam-12", "-o", "%i", "--states=all"
    ]  # fmt: skip


def test_an_unnamed_request_keeps_the_plain_name(tmp_path: Path) -> None:
    runner = Recorded(CommandResult(0, "5\n", ""))
    text = SlurmScheduler(runner).submit(request(tmp_path)).script.read_text()
    assert "#SBATCH --job-name=balsam\n" in text


def test_a_job_name_with_a_control_character_is_refused(tmp_path: Path) -> None:
    from balsam.errors import ValidationError

    with pytest.raises(ValidationError, match="job name"):
        request(tmp_path, job_name="balsam-1\n#SBATCH --x")


def test_find_with_nothing_known_is_empty_and_a_failure_is_one_line() -> None:
    assert SlurmScheduler(Recorded(CommandResult(0, "", ""))).find("balsam-9") == []
    failing = SlurmScheduler(Recorded(CommandResult(1, "", "squeue: error: down\n")))
    with pytest.raises(SchedulerError, match="squeue failed: squeue: error: down"):
        failing.find("balsam-9")
