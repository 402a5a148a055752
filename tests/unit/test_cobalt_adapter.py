"""The Cobalt adapter's own logic: the script it writes, the ``qsub`` command line that
carries the allocation's options, the commands it runs and how it reads their output.

No Cobalt server runs here and none can be installed, so the outputs in
tests/unit/golden/cobalt/ are written by hand in the formats Cobalt's qsub(1) and qstat(1)
pages document and its clients print (the tabular layout of Cobalt.Util.print_tabular): not
recordings. tests/unit/golden/README.md says where each one comes from."""

from __future__ import annotations

from pathlib import Path

import pytest
from golden.support import Recorded, assert_matches_golden_script, printed, request

from balsam.errors import SchedulerError
from balsam.platform.schedulers import get_scheduler
from balsam.platform.schedulers.base import BatchState
from balsam.platform.schedulers.cobalt import CobaltScheduler, parse_status, parse_submit
from balsam.platform.schedulers.commands import CommandResult


def test_the_options_go_on_the_qsub_command_line_and_the_script_runs_the_launcher(
    tmp_path: Path,
) -> None:
    runner = Recorded(printed("cobalt", "qsub.txt"))
    launch = request(tmp_path, sched_flags=("--attrs", "filesystems=home"))
    submission = CobaltScheduler(runner).submit(launch)
    assert submission.launch_id == "352711"
    assert_matches_golden_script(submission.script, tmp_path, "cobalt")
    prefix = str(tmp_path / "wf" / "qsubmit" / "cobalt-$jobid")
    assert runner.argvs == [
        ["qsub", "--jobname", "balsam-12", "-n", "4", "-t", "30", "--mode", "script",
         "-O", prefix, "-A", "my proj; touch x", "-q", "debug",
         "--attrs", "filesystems=home", str(submission.script)]
    ]  # fmt: skip
    assert "filesystems" not in submission.script.read_text()


def test_a_launch_without_project_or_queue_leaves_them_to_cobalt(tmp_path: Path) -> None:
    runner = Recorded(printed("cobalt", "qsub.txt"))
    CobaltScheduler(runner).submit(request(tmp_path, project="", queue="", wall_time_minutes=0.2))
    argv = runner.argvs[0]
    assert "-A" not in argv and "-q" not in argv
    assert argv[argv.index("-t") + 1] == "1"


def test_the_job_id_is_the_last_line_that_starts_with_a_number() -> None:
    assert parse_submit(CommandResult(0, "352711\n", "")) == "352711"
    # A site's submit filter may print a note first (Theta printed the queue routed to).
    noted = 'Job routed to queue "debug-cache-quad".\n352712\n'
    assert parse_submit(CommandResult(0, noted, "")) == "352712"
    with pytest.raises(SchedulerError, match="qsub printed no job id"):
        parse_submit(CommandResult(0, "\n", ""))


def test_a_refused_submission_is_one_line_with_cobalt_s_reason(tmp_path: Path) -> None:
    runner = Recorded(printed("cobalt", stderr="qsub_refused.stderr", code=1))
    with pytest.raises(
        SchedulerError, match=r"^qsub refused the launcher job: failed to create the job\."
    ):
        CobaltScheduler(runner).submit(request(tmp_path, queue="nosuch"))


def test_statuses_are_read_from_the_table_and_unlisted_jobs_are_gone() -> None:
    ids = [str(n) for n in range(352711, 352718)] + ["352700"]
    runner = Recorded(printed("cobalt", "cobalt_qstat.txt"))
    states = CobaltScheduler(runner).status(ids)
    assert runner.argvs == [["qstat", "--header", "JobId:State", *ids]]
    assert states == {
        "352711": BatchState.QUEUED,
        "352712": BatchState.RUNNING,
        "352713": BatchState.QUEUED,
        "352714": BatchState.RUNNING,
        "352715": BatchState.FAILED,
        "352716": BatchState.QUEUED,
        "352717": BatchState.RUNNING,
        "352700": BatchState.GONE,
    }


def test_qstat_knowing_none_of_the_jobs_means_they_are_gone() -> None:
    # Cobalt's qstat exits 1 and prints nothing when it holds none of the ids.
    assert parse_status(CommandResult(1, "", ""), ["1", "2"]) == {
        "1": BatchState.GONE,
        "2": BatchState.GONE,
    }
    failing = CommandResult(1, "", "Failed to connect to queue manager\n")
    with pytest.raises(SchedulerError, match="qstat failed: Failed to connect to queue manager"):
        parse_status(failing, ["1"])
    assert CobaltScheduler(Recorded()).status([]) == {}


def test_find_by_name_reads_the_name_column_names_with_spaces_too() -> None:
    runner = Recorded(printed("cobalt", "cobalt_qstat_names.txt"))
    scheduler = CobaltScheduler(runner, user="alice")
    assert scheduler.find("balsam-12") == ["352711", "352721"]
    assert runner.argvs == [["qstat", "-u", "alice", "--header", "JobId:JobName"]]
    named = CobaltScheduler(Recorded(printed("cobalt", "cobalt_qstat_names.txt")), user="a")
    assert named.find("my analysis") == ["352720"]
    failing = CobaltScheduler(Recorded(CommandResult(1, "", "qstat: down\n")), user="a")
    with pytest.raises(SchedulerError, match="qstat failed: qstat: down"):
        failing.find("balsam-12")


def test_backfill_is_empty_and_asks_nothing() -> None:
    assert CobaltScheduler(Recorded()).backfill("default") == []


def test_cancel_runs_qdel_and_cobalt_itself_ignores_an_ended_job() -> None:
    runner = Recorded(CommandResult(0, "", ""), CommandResult(1, "", "qdel: server down\n"))
    scheduler = CobaltScheduler(runner)
    scheduler.cancel("352711")
    with pytest.raises(SchedulerError, match=r"^qdel 352712 failed: qdel: server down"):
        scheduler.cancel("352712")
    assert runner.argvs == [["qdel", "352711"], ["qdel", "352712"]]


def test_cobalt_is_chosen_by_its_short_name() -> None:
    assert isinstance(get_scheduler("cobalt"), CobaltScheduler)
