"""The LSF adapter's own logic: the script it writes, the ``bsub`` command line that carries
the allocation's options, the commands it runs and how it reads their output.

No LSF cluster runs here and none can be installed, so the outputs in tests/unit/golden/lsf/
are written by hand in the formats IBM's LSF 10.1 command reference documents (bsub, bjobs
``-o``/``-noheader``, bkill): not recordings. tests/unit/golden/README.md says where each one
comes from."""

from __future__ import annotations

from pathlib import Path

import pytest
from golden.support import Recorded, assert_matches_golden_script, printed, request

from balsam.errors import SchedulerError
from balsam.platform.schedulers import get_scheduler
from balsam.platform.schedulers.base import BatchState
from balsam.platform.schedulers.commands import CommandResult
from balsam.platform.schedulers.lsf import LsfScheduler, parse_status


def test_the_options_go_on_the_bsub_command_line_and_the_script_runs_the_launcher(
    tmp_path: Path,
) -> None:
    runner = Recorded(printed("lsf", "bsub.txt"))
    submission = LsfScheduler(runner).submit(
        request(tmp_path, sched_flags=("-alloc_flags", "smt4"))
    )
    assert submission.launch_id == "4242"
    assert_matches_golden_script(submission.script, tmp_path, "lsf")
    output = str(tmp_path / "wf" / "qsubmit" / "lsf-%J.out")
    assert runner.argvs == [
        ["bsub", "-J", "balsam-12", "-nnodes", "4", "-W", "30", "-o", output,
         "-P", "my proj; touch x", "-q", "debug", "-alloc_flags", "smt4", str(submission.script)]
    ]  # fmt: skip
    assert "smt4" not in submission.script.read_text()


def test_lsf_runs_the_command_through_a_shell_so_the_script_path_is_quoted(
    tmp_path: Path,
) -> None:
    runner = Recorded(printed("lsf", "bsub.txt"))
    launch = request(tmp_path, scripts_dir=tmp_path / "my runs" / "qsubmit", project="", queue="")
    submission = LsfScheduler(runner).submit(launch)
    argv = runner.argvs[0]
    assert argv[-1] == f"'{submission.script}'"
    assert "-P" not in argv and "-q" not in argv
    # The output path is an argument of bsub itself, given as it is.
    assert argv[argv.index("-o") + 1] == str(tmp_path / "my runs" / "qsubmit" / "lsf-%J.out")


def test_the_wall_time_is_whole_minutes_rounded_up(tmp_path: Path) -> None:
    runner = Recorded(printed("lsf", "bsub.txt"), printed("lsf", "bsub.txt"))
    LsfScheduler(runner).submit(request(tmp_path, wall_time_minutes=0.5))
    LsfScheduler(runner).submit(request(tmp_path, wall_time_minutes=90.2))
    assert [argv[argv.index("-W") + 1] for argv in runner.argvs] == ["1", "91"]


def test_a_refused_submission_is_one_line_with_lsf_s_reason(tmp_path: Path) -> None:
    runner = Recorded(printed("lsf", stderr="bsub_refused.stderr", code=255))
    with pytest.raises(
        SchedulerError, match=r"^bsub refused the launcher job: nosuch: No such queue\. Job not"
    ):
        LsfScheduler(runner).submit(request(tmp_path, queue="nosuch"))
    with pytest.raises(SchedulerError, match="bsub printed no job id"):
        LsfScheduler(Recorded(CommandResult(0, "Job submitted.\n", ""))).submit(request(tmp_path))


def test_statuses_are_read_and_translated_and_forgotten_jobs_are_gone() -> None:
    ids = [str(n) for n in range(4242, 4253)] + ["4260"]
    runner = Recorded(printed("lsf", "bjobs_stat.txt", "bjobs_stat.stderr", code=255))
    states = LsfScheduler(runner).status(ids)
    assert runner.argvs == [["bjobs", "-a", "-noheader", "-o", "jobid stat", *ids]]
    assert states == {
        "4242": BatchState.QUEUED,
        "4243": BatchState.RUNNING,
        "4244": BatchState.FINISHED,
        "4245": BatchState.FAILED,
        "4246": BatchState.QUEUED,
        "4247": BatchState.QUEUED,
        "4248": BatchState.QUEUED,
        "4249": BatchState.RUNNING,
        "4250": BatchState.CANCELLED,
        "4251": BatchState.QUEUED,
        "4252": BatchState.QUEUED,
        "4260": BatchState.GONE,
    }


def test_a_failing_bjobs_is_one_line() -> None:
    with pytest.raises(SchedulerError, match=r"^bjobs failed: LSF is down\. Please wait"):
        parse_status(printed("lsf", stderr="bjobs_down.stderr", code=255), ["4242"])
    assert LsfScheduler(Recorded()).status([]) == {}


def test_find_by_name_and_a_name_lsf_does_not_know() -> None:
    runner = Recorded(
        printed("lsf", "bjobs_find.txt"),
        printed("lsf", stderr="bjobs_find_none.stderr", code=255),
        printed("lsf", stderr="bjobs_down.stderr", code=255),
    )
    scheduler = LsfScheduler(runner)
    assert scheduler.find("balsam-12") == ["4242"]
    assert runner.argvs[0] == ["bjobs", "-a", "-noheader", "-J", "balsam-12", "-o", "jobid"]
    assert scheduler.find("balsam-9") == []
    with pytest.raises(SchedulerError, match="bjobs failed: LSF is down"):
        scheduler.find("balsam-9")


def test_backfill_is_empty_and_asks_nothing() -> None:
    # bslots counts slots, not nodes: see the module's text.
    assert LsfScheduler(Recorded()).backfill("batch") == []


def test_cancel_runs_bkill_and_an_ended_or_forgotten_job_is_no_error() -> None:
    runner = Recorded(
        printed("lsf", "bkill.txt"),
        printed("lsf", stderr="bkill_finished.stderr", code=255),
        printed("lsf", stderr="bkill_unknown.stderr", code=255),
        CommandResult(255, "", "Job <4300>: User permission denied\n"),
    )
    scheduler = LsfScheduler(runner)
    for job_id in ["4243", "4244", "9999"]:
        scheduler.cancel(job_id)
    with pytest.raises(SchedulerError, match=r"^bkill 4300 failed: Job <4300>: User permission"):
        scheduler.cancel("4300")
    assert runner.argvs[:3] == [["bkill", "4243"], ["bkill", "4244"], ["bkill", "9999"]]


def test_lsf_is_chosen_by_its_short_name() -> None:
    assert isinstance(get_scheduler("lsf"), LsfScheduler)
