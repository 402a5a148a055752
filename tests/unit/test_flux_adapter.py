"""The Flux adapter's own logic: the script it writes (the host list it exports for node
discovery included), the ``flux batch`` command line that carries the allocation's options,
the commands it runs and how it reads their output.

No Flux instance runs here and none can be installed, so the outputs in
tests/unit/golden/flux/ are written by hand in the formats flux-core documents (flux-batch(1),
flux-jobs(1) ``-o``, flux-resource(1) ``list -o``, flux-cancel(1)) and its commands print:
not recordings. tests/unit/golden/README.md says where each one comes from. The script's
host-list lines are run by bash below with a stand-in ``flux`` program."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from golden.support import Recorded, assert_matches_golden_script, printed, request

from balsam.errors import SchedulerError
from balsam.platform import nodes
from balsam.platform.schedulers import get_scheduler
from balsam.platform.schedulers.base import BackfillWindow, BatchState
from balsam.platform.schedulers.commands import CommandResult
from balsam.platform.schedulers.flux import FluxScheduler, ascii_id, parse_status

IDS = ["f2bGxD3V", "f2bHfD7M", "f2bJqR9n", "f2bKw1Xp", "f2bLa8Qz", "f2bM3tUe", "f2bNc5Hw"]


def test_the_options_go_on_the_flux_batch_command_line_and_the_script_runs_the_launcher(
    tmp_path: Path,
) -> None:
    runner = Recorded(printed("flux", "flux_batch.txt"))
    submission = FluxScheduler(runner).submit(request(tmp_path, sched_flags=("--urgency=8",)))
    assert submission.launch_id == "f2bGxD3V"
    assert_matches_golden_script(submission.script, tmp_path, "flux")
    output = str(tmp_path / "wf" / "qsubmit" / "flux-{{id}}.out")
    assert runner.argvs == [
        ["flux", "batch", "--job-name", "balsam-12", "-N", "4", "--exclusive", "-t", "30m",
         "--output", output, "--queue", "debug", '--setattr=bank="my proj; touch x"',
         "--urgency=8", str(submission.script)]
    ]  # fmt: skip
    assert "urgency" not in submission.script.read_text()


def test_the_bank_stays_text_and_an_unset_queue_or_project_is_left_out(tmp_path: Path) -> None:
    runner = Recorded(printed("flux", "flux_batch.txt"), printed("flux", "flux_batch.txt"))
    FluxScheduler(runner).submit(request(tmp_path, project="123", wall_time_minutes=0.5))
    FluxScheduler(runner).submit(request(tmp_path, project="", queue=""))
    assert '--setattr=bank="123"' in runner.argvs[0]
    assert runner.argvs[0][runner.argvs[0].index("-t") + 1] == "0.5m"
    assert not any(arg.startswith(("--setattr", "--queue")) for arg in runner.argvs[1])


def test_a_refused_submission_is_one_line_with_flux_s_reason(tmp_path: Path) -> None:
    runner = Recorded(printed("flux", stderr="flux_batch_refused.stderr", code=1))
    with pytest.raises(
        SchedulerError, match=r"^flux batch refused the launcher job: flux-batch: ERROR: Invalid"
    ):
        FluxScheduler(runner).submit(request(tmp_path, queue="nosuch"))
    with pytest.raises(SchedulerError, match="flux batch printed no job id"):
        FluxScheduler(Recorded(CommandResult(0, "", ""))).submit(request(tmp_path))


def test_ids_are_kept_with_an_ascii_f() -> None:
    assert ascii_id("ƒ2bGxD3V\n") == "f2bGxD3V"
    assert ascii_id("f2bGxD3V") == "f2bGxD3V"


def test_statuses_are_read_and_inactive_jobs_by_their_result() -> None:
    runner = Recorded(printed("flux", "flux_jobs.txt"))
    # An id kept from an older answer with Flux's own ƒ still matches.
    states = FluxScheduler(runner).status([*IDS, "ƒ2bP7ruA", "f2bQ4kEr"])
    assert runner.argvs == [
        ["flux", "jobs", "-n", "-o", "{id.f58} {state} {result}", *IDS, "ƒ2bP7ruA", "f2bQ4kEr"]
    ]
    assert states == {
        "f2bGxD3V": BatchState.QUEUED,
        "f2bHfD7M": BatchState.RUNNING,
        "f2bJqR9n": BatchState.FINISHED,
        "f2bKw1Xp": BatchState.FAILED,
        "f2bLa8Qz": BatchState.CANCELLED,
        "f2bM3tUe": BatchState.FINISHED,
        "f2bNc5Hw": BatchState.QUEUED,
        "ƒ2bP7ruA": BatchState.RUNNING,
        "f2bQ4kEr": BatchState.QUEUED,
    }


def test_a_job_flux_does_not_know_is_gone() -> None:
    # Older Flux exits 0 with the unknown id on stderr; newer exits 1 when all are unknown.
    some = printed("flux", "flux_jobs.txt", "flux_jobs_unknown.stderr")
    assert parse_status(some, ["f2bR9vZs", "f2bHfD7M"]) == {
        "f2bR9vZs": BatchState.GONE,
        "f2bHfD7M": BatchState.RUNNING,
    }
    none = printed("flux", stderr="flux_jobs_unknown.stderr", code=1)
    assert parse_status(none, ["f2bR9vZs"]) == {"f2bR9vZs": BatchState.GONE}


def test_a_failing_flux_jobs_is_one_line() -> None:
    down = CommandResult(1, "", "flux-jobs: ERROR: Unable to connect to Flux: No such file\n")
    with pytest.raises(SchedulerError, match=r"^flux jobs failed: flux-jobs: ERROR: Unable"):
        parse_status(down, ["f2bGxD3V"])
    assert FluxScheduler(Recorded()).status([]) == {}


def test_find_by_name_lists_this_user_s_jobs_in_any_state() -> None:
    runner = Recorded(printed("flux", "flux_jobs_find.txt"), CommandResult(0, "", ""))
    scheduler = FluxScheduler(runner)
    assert scheduler.find("balsam-12") == ["f2bGxD3V"]
    assert runner.argvs[0] == ["flux", "jobs", "-n", "-a", "--name", "balsam-12", "-o", "{id.f58}"]
    assert scheduler.find("balsam-9") == []
    failing = FluxScheduler(Recorded(CommandResult(1, "", "flux-jobs: ERROR: down\n")))
    with pytest.raises(SchedulerError, match="flux jobs failed: flux-jobs: ERROR: down"):
        failing.find("balsam-9")


def test_backfill_counts_hosts_with_free_resources_and_none_allocated() -> None:
    runner = Recorded(printed("flux", "flux_resource_list.txt"))
    # free node[3-6,9], allocated node[1-2,6]: node6 is shared with a running job.
    assert FluxScheduler(runner).backfill("pbatch") == [BackfillWindow("pbatch", 4, math.inf)]
    assert runner.argvs == [
        ["flux", "resource", "list", "-n", "-s", "free,allocated", "-q", "pbatch",
         "-o", "{state} {nodelist}"]
    ]  # fmt: skip


def test_backfill_with_nothing_free_is_empty_and_failures_are_one_line() -> None:
    runner = Recorded(printed("flux", "flux_resource_list_busy.txt"))
    assert FluxScheduler(runner).backfill("") == []
    assert "-q" not in runner.argvs[0]
    refused = CommandResult(1, "", "flux-resource: ERROR: --queue: nosuch: no such queue\n")
    with pytest.raises(SchedulerError, match=r"flux resource list failed: .*no such queue"):
        FluxScheduler(Recorded(refused)).backfill("nosuch")
    garbled = CommandResult(0, "free node[3-\n", "")
    with pytest.raises(SchedulerError, match="flux resource list: unbalanced"):
        FluxScheduler(Recorded(garbled)).backfill("pbatch")


def test_cancel_runs_flux_cancel_and_an_ended_or_forgotten_job_is_no_error() -> None:
    runner = Recorded(
        CommandResult(0, "", ""),
        printed("flux", stderr="flux_cancel_inactive.stderr", code=1),
        printed("flux", stderr="flux_cancel_unknown.stderr", code=1),
        CommandResult(1, "", "flux-cancel: ERROR: f2bS1aBc: Operation not permitted\n"),
    )
    scheduler = FluxScheduler(runner)
    for job_id in ["f2bHfD7M", "f2bJqR9n", "f2bR9vZs"]:
        scheduler.cancel(job_id)
    with pytest.raises(SchedulerError, match=r"^flux cancel f2bS1aBc failed: .*not permitted"):
        scheduler.cancel("f2bS1aBc")
    assert runner.argvs[0] == ["flux", "cancel", "f2bHfD7M"]


def _stand_in_flux(tmp_path: Path, answer: str, code: int = 0) -> Path:
    """A ``flux`` program that answers ``getattr hostlist`` as a Flux instance would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    flux = bin_dir / "flux"
    script = f'#!/bin/sh\n[ "$1 $2" = "getattr hostlist" ] && echo "{answer}"\nexit {code}\n'
    flux.write_text(script)
    flux.chmod(0o755)
    return bin_dir


def _run_script(tmp_path: Path, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run the adapter's script with a launcher that prints the hosts node discovery sees."""
    show = "from balsam.platform import nodes; import os; print(nodes.flux_hosts(os.environ))"
    launch = request(tmp_path, balsam_argv=[sys.executable, "-c", show])
    submission = FluxScheduler(Recorded(printed("flux", "flux_batch.txt"))).submit(launch)
    (tmp_path / "wf").mkdir(exist_ok=True)
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FLUX_URI": "local:///x"}
    return subprocess.run(
        ["/bin/bash", str(submission.script)], env=env, capture_output=True, text=True, check=False
    )


def test_the_script_hands_the_instance_s_hosts_to_node_discovery(tmp_path: Path) -> None:
    done = _run_script(tmp_path, _stand_in_flux(tmp_path, "node[7-8]"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['node7', 'node8']"
    assert nodes.FLUX_HOSTLIST_VARIABLE in submission_text(tmp_path)


def test_the_script_stops_when_flux_cannot_tell_its_hosts(tmp_path: Path) -> None:
    done = _run_script(tmp_path, _stand_in_flux(tmp_path, "", code=1))
    assert done.returncode == 1
    assert done.stdout == ""


def submission_text(tmp_path: Path) -> str:
    """The text of the one script written under ``tmp_path``."""
    (script,) = (tmp_path / "wf" / "qsubmit").glob("flux_*.sh")
    return script.read_text()


def test_flux_is_chosen_by_its_short_name() -> None:
    assert isinstance(get_scheduler("flux"), FluxScheduler)
