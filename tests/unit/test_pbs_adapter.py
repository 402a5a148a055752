"""The PBS adapter's own logic: the script it writes, the commands it runs and how it reads
their output.

No PBS server runs here and none can be installed, so the outputs in tests/unit/golden/pbs/
are written by hand in the formats PBS documents (qstat(1B) and pbsnodes(8B) for ``-F json``,
qsub(1B), qselect(1B)) and prints (OpenPBS's qstat.c, qdel.c, pbsnodes.c): not recordings.
tests/unit/golden/README.md says where each one comes from."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from golden.support import Recorded, assert_matches_golden_script, printed, request

from balsam.errors import SchedulerError
from balsam.platform.schedulers import get_scheduler
from balsam.platform.schedulers.base import BackfillWindow, BatchState
from balsam.platform.schedulers.commands import CommandResult, hms
from balsam.platform.schedulers.pbs import PbsScheduler, ended_state, parse_status

JOBS = [f"{n}.pbs-server" for n in range(1234, 1243)]


def test_the_script_asks_for_the_allocation_and_runs_the_launcher_inside_it(
    tmp_path: Path,
) -> None:
    runner = Recorded(printed("pbs", "qsub.txt"))
    launch = request(tmp_path, sched_flags=("-l", "filesystems=home"))
    submission = PbsScheduler(runner).submit(launch)
    assert submission.launch_id == "1234.pbs-server"
    assert_matches_golden_script(submission.script, tmp_path, "pbs")
    assert submission.script.name.startswith("pbs_")
    assert runner.argvs == [["qsub", "-l", "filesystems=home", str(submission.script)]]
    assert "filesystems" not in submission.script.read_text()


def test_a_launch_without_project_or_queue_leaves_them_to_pbs(tmp_path: Path) -> None:
    runner = Recorded(printed("pbs", "qsub.txt"))
    text = PbsScheduler(runner).submit(request(tmp_path, project="", queue="")).script.read_text()
    assert "#PBS -A" not in text and "#PBS -q" not in text
    assert "#PBS -N balsam-12\n" in text


def test_a_refused_submission_is_one_line_with_pbs_s_reason(tmp_path: Path) -> None:
    runner = Recorded(printed("pbs", stderr="qsub_refused.stderr", code=170))
    with pytest.raises(
        SchedulerError, match=r"^qsub refused the launcher job: qsub: Unknown queue$"
    ):
        PbsScheduler(runner).submit(request(tmp_path, queue="nosuch"))


def test_a_submission_answer_without_a_job_id_is_an_error(tmp_path: Path) -> None:
    runner = Recorded(CommandResult(0, "\n", ""))
    with pytest.raises(SchedulerError, match="qsub printed no job id"):
        PbsScheduler(runner).submit(request(tmp_path))


def test_statuses_are_read_from_the_json_and_ended_jobs_by_their_exit_status() -> None:
    runner = Recorded(printed("pbs", "qstat_f_F_json.json"))
    states = PbsScheduler(runner).status(JOBS)
    assert runner.argvs == [["qstat", "-f", "-F", "json", "-x", *JOBS]]
    assert states == {
        "1234.pbs-server": BatchState.QUEUED,
        "1235.pbs-server": BatchState.RUNNING,
        "1236.pbs-server": BatchState.FINISHED,  # Exit_status 0
        "1237.pbs-server": BatchState.FINISHED,  # killed at its wall time
        "1238.pbs-server": BatchState.CANCELLED,  # 256 + SIGTERM: qdel
        "1239.pbs-server": BatchState.FAILED,  # exit 1
        "1240.pbs-server": BatchState.CANCELLED,  # deleted before it ran
        "1241.pbs-server": BatchState.QUEUED,  # held
        "1242.pbs-server": BatchState.RUNNING,  # exiting
    }


def test_a_job_pbs_has_forgotten_is_gone_and_the_others_still_read() -> None:
    out = printed("pbs", "qstat_f_F_json.json", "qstat_unknown.stderr", code=153)
    states = parse_status(out, ["1243.pbs-server", "1235.pbs-server"])
    assert states == {"1243.pbs-server": BatchState.GONE, "1235.pbs-server": BatchState.RUNNING}
    nothing = CommandResult(153, "", "qstat: Unknown Job Id 1243.pbs-server\n")
    assert parse_status(nothing, ["1243.pbs-server"]) == {"1243.pbs-server": BatchState.GONE}


def test_a_short_id_matches_the_full_one() -> None:
    states = parse_status(printed("pbs", "qstat_f_F_json.json"), ["1235", "1236.pbs"])
    assert states == {"1235": BatchState.RUNNING, "1236.pbs": BatchState.FINISHED}


def test_a_failing_or_garbled_qstat_is_one_line() -> None:
    with pytest.raises(SchedulerError, match=r"^qstat failed: qstat: cannot connect to server"):
        parse_status(printed("pbs", stderr="qstat_down.stderr", code=1), ["1234.pbs-server"])
    with pytest.raises(SchedulerError, match="qstat printed no JSON"):
        parse_status(CommandResult(0, "{ not json", ""), ["1234.pbs-server"])
    with pytest.raises(SchedulerError, match="without a 'Jobs' object"):
        parse_status(CommandResult(0, '{"Jobs": []}', ""), ["1234.pbs-server"])


def test_no_ids_ask_nothing() -> None:
    assert PbsScheduler(Recorded()).status([]) == {}


def test_ended_states() -> None:
    assert ended_state({"Exit_status": 0}) == BatchState.FINISHED
    assert ended_state({"Exit_status": "0"}) == BatchState.FINISHED
    assert ended_state({"Exit_status": -29}) == BatchState.FINISHED
    assert ended_state({"Exit_status": 265}) == BatchState.CANCELLED
    assert ended_state({"Exit_status": -1}) == BatchState.FAILED
    assert ended_state({"Exit_status": "x"}) == BatchState.FAILED
    assert ended_state({}) == BatchState.CANCELLED


def test_find_by_name_asks_qselect_for_this_user_s_jobs() -> None:
    runner = Recorded(printed("pbs", "qselect.txt"), CommandResult(0, "", ""))
    scheduler = PbsScheduler(runner, user="alice")
    assert scheduler.find("balsam-12") == ["1234.pbs-server", "1250.pbs-server"]
    assert runner.argvs == [["qselect", "-x", "-u", "alice", "-N", "balsam-12"]]
    assert scheduler.find("balsam-9") == []
    failing = PbsScheduler(Recorded(CommandResult(2, "", "qselect: illegal -N value\n")), "a")
    with pytest.raises(SchedulerError, match="qselect failed: qselect: illegal -N value"):
        failing.find("balsam-9")


def test_the_user_defaults_to_this_process_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "bob")
    assert PbsScheduler(Recorded()).user == "bob"


@pytest.mark.parametrize(
    ("queue", "free"),
    # x1005, x1006 serve any queue; x1008 is tied to prod, x1009 to debug. x1001 runs a job,
    # x1007 runs part of one, x1010 holds a reservation, x1011 is down.
    [("debug", 3), ("prod", 3), ("", 2)],
)
def test_backfill_counts_wholly_free_vnodes_of_the_queue(queue: str, free: int) -> None:
    runner = Recorded(printed("pbs", "pbsnodes_a_F_json.json"))
    windows = PbsScheduler(runner).backfill(queue)
    assert runner.argvs == [["pbsnodes", "-a", "-F", "json"]]
    assert windows == [BackfillWindow(queue, free, math.inf)]


def test_backfill_with_nothing_free_is_empty_and_a_failure_is_one_line() -> None:
    busy = CommandResult(0, '{"timestamp": 1, "nodes": {"n1": {"state": "job-busy"}}}', "")
    assert PbsScheduler(Recorded(busy)).backfill("debug") == []
    failing = CommandResult(1, "", "pbsnodes: Server has no node list\n")
    with pytest.raises(SchedulerError, match="pbsnodes failed: pbsnodes: Server has no node list"):
        PbsScheduler(Recorded(failing)).backfill("debug")


def test_cancel_runs_qdel_and_an_ended_or_forgotten_job_is_no_error() -> None:
    runner = Recorded(
        CommandResult(0, "", ""),
        printed("pbs", stderr="qdel_finished.stderr", code=35),
        printed("pbs", stderr="qdel_unknown.stderr", code=153),
        CommandResult(1, "", "qdel: Unauthorized Request 1300.pbs-server\n"),
    )
    scheduler = PbsScheduler(runner)
    for job_id in ["1235.pbs-server", "1236.pbs-server", "1200.pbs-server"]:
        scheduler.cancel(job_id)
    with pytest.raises(SchedulerError, match=r"^qdel 1300.pbs-server failed: qdel: Unauthorized"):
        scheduler.cancel("1300.pbs-server")
    assert [argv[0] for argv in runner.argvs] == ["qdel"] * 4
    assert runner.argvs[0] == ["qdel", "1235.pbs-server"]


def test_walltimes_are_whole_seconds_rounded_up() -> None:
    assert hms(30) == "00:30:00"
    assert hms(0.05) == "00:00:03"
    assert hms(1500.5) == "25:00:30"


def test_pbs_is_chosen_by_its_short_name() -> None:
    assert isinstance(get_scheduler("pbs"), PbsScheduler)
