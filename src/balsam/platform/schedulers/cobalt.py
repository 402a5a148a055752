"""The ``cobalt`` scheduler (Cobalt, as on ALCF's Theta and Cooley): ``qsub``, ``qstat`` and
``qdel``.

Built like the Slurm adapter, with the allocation's options on the ``qsub`` command line
rather than in ``#COBALT`` lines: Cobalt reads those by splitting at white space, with no
quoting, so a project or job name holding a space or a quote could not be written there
safely. The command asks for the project (``-A``), the queue (``-q``), the nodes (``-n``),
the wall time in whole minutes (``-t``), a script job (``--mode script``), the job name
(``--jobname``) and the output prefix ``<scripts_dir>/cobalt-$jobid`` (``-O``: Cobalt writes
``.output``, ``.error`` and ``.cobaltlog`` there, putting the job id for ``$jobid``). The
launcher runs for the wall time less
:func:`~balsam.platform.schedulers.commands.safety_margin_minutes`. ``--sched-flags`` come
before the script on the ``qsub`` command line.

``qstat --header JobId:State IDS`` lists the jobs Cobalt still holds; a job that has ended
leaves its queue at once, so one it does not list is GONE (Cobalt keeps no history that
``qstat`` shows). ``qdel`` of an ended job prints nothing and succeeds.

Backfill: none (always empty). Cobalt shows no backfill windows through ``qstat``; the
``nodelist`` command's backfill column is particular to Cray XC systems and its format is
not documented, so this adapter reports nothing rather than guess.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Sequence
from pathlib import Path

from balsam.errors import SchedulerError
from balsam.platform.schedulers.base import (
    BackfillWindow,
    BatchState,
    LaunchRequest,
    Submission,
    script_text,
    write_script,
)
from balsam.platform.schedulers.commands import (
    CommandResult,
    CommandRunner,
    command_reason,
    launcher_minutes,
    run_command,
    whole_minutes,
)

#: Cobalt's job states (``qstat`` State) in Balsam's terms.
COBALT_STATES: dict[str, BatchState] = {
    "queued": BatchState.QUEUED,
    "hold": BatchState.QUEUED,
    "user_hold": BatchState.QUEUED,
    "admin_hold": BatchState.QUEUED,
    "dep_hold": BatchState.QUEUED,
    "maxrun_hold": BatchState.QUEUED,
    "preempted": BatchState.QUEUED,
    # The job's prologue runs: the allocation is not ready yet.
    "starting": BatchState.QUEUED,
    "running": BatchState.RUNNING,
    "preempting": BatchState.RUNNING,
    "killing": BatchState.RUNNING,
    "exiting": BatchState.RUNNING,
    # A job it depends on failed: it will never run.
    "dep_fail": BatchState.FAILED,
    "done": BatchState.FINISHED,
}

#: The script's only header: the allocation's options are on the qsub command line.
HEADER = "# scheduler: cobalt (the allocation's options are on the qsub command line)"


def submit_argv(request: LaunchRequest, script: Path, output_prefix: str) -> list[str]:
    """``qsub --jobname NAME -n N -t MINUTES --mode script -O PREFIX [-A P] [-q Q] [FLAGS]
    SCRIPT``."""
    argv = ["qsub", "--jobname", request.job_name, "-n", str(request.num_nodes)]
    argv += ["-t", str(whole_minutes(request.wall_time_minutes)), "--mode", "script"]
    argv += ["-O", output_prefix]
    if request.project:
        argv += ["-A", request.project]
    if request.queue:
        argv += ["-q", request.queue]
    return [*argv, *request.sched_flags, str(script)]


def parse_submit(out: CommandResult) -> str:
    """The job id ``qsub`` printed: the last line that starts with a number (a site's
    filter may print notes such as the queue the job was routed to before it)."""
    if out.returncode != 0:
        raise SchedulerError(f"qsub refused the launcher job: {command_reason(out)}")
    for line in reversed(out.stdout.splitlines()):
        words = line.split()
        if words and words[0].isdigit():
            return words[0]
    raise SchedulerError(f"qsub printed no job id: {out.stdout.strip()[:200]!r}")


def status_argv(ids: Sequence[str]) -> list[str]:
    """``qstat`` for these jobs: a ``JobId State`` table."""
    return ["qstat", "--header", "JobId:State", *ids]


def parse_status(out: CommandResult, ids: Sequence[str]) -> dict[str, BatchState]:
    """Each job's state; a job ``qstat`` does not list is GONE."""
    # qstat exits 1, printing nothing, when it holds none of the ids asked about.
    if out.returncode != 0 and (out.stderr.strip() or out.stdout.strip()):
        raise SchedulerError(f"qstat failed: {command_reason(out)}")
    found = {job_id: rest for job_id, rest in _rows(out.stdout)}
    return {
        job_id: COBALT_STATES.get(found[job_id], BatchState.QUEUED)
        if job_id in found
        else BatchState.GONE
        for job_id in ids
    }


def find_argv(job_name: str, user: str) -> list[str]:
    """``qstat`` for ``user``'s jobs: a ``JobId JobName`` table."""
    return ["qstat", "-u", user, "--header", "JobId:JobName"]


def parse_find(out: CommandResult, job_name: str) -> list[str]:
    """Ids of the listed jobs named ``job_name``."""
    if out.returncode != 0:
        raise SchedulerError(f"qstat failed: {command_reason(out)}")
    return [job_id for job_id, name in _rows(out.stdout) if name == job_name]


def _rows(table: str) -> list[tuple[str, str]]:
    """``(job id, rest of the row)`` for each row of a ``qstat`` table whose last column is
    the rest; the header line and its ``====`` rule start with no number and are skipped."""
    rows = []
    for line in table.splitlines():
        first, _, rest = line.strip().partition(" ")
        if first.isdigit():
            rows.append((first, rest.strip()))
    return rows


class CobaltScheduler:
    """Submits, follows and cancels launcher batch jobs on Cobalt."""

    name = "cobalt"

    def __init__(self, run: CommandRunner = run_command, user: str | None = None) -> None:
        self.run = run
        self._user = user

    @property
    def user(self) -> str:
        """Whose jobs :meth:`find` looks among (this process's user unless given)."""
        if self._user is None:
            self._user = getpass.getuser()
        return self._user

    def submit(self, request: LaunchRequest) -> Submission:
        """Write the batch script and ``qsub`` it; returns Cobalt's job id."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        # Cobalt puts the job id for $jobid itself; no shell sees this argument.
        prefix = str(request.scripts_dir / "cobalt-$jobid")
        minutes = launcher_minutes(request.wall_time_minutes)
        text = script_text(request, [HEADER], launcher_minutes=minutes)
        try:
            script = write_script(request.scripts_dir, f"cobalt_{stamp}_", text)
        except OSError as exc:
            raise SchedulerError(f"cannot write the launcher script: {exc}") from exc
        job_id = parse_submit(self.run(submit_argv(request, script, prefix)))
        return Submission(launch_id=job_id, script=script)

    def status(self, ids: Sequence[str]) -> dict[str, BatchState]:
        """Where each of these batch jobs stands."""
        if not ids:
            return {}
        return parse_status(self.run(status_argv(ids)), ids)

    def find(self, job_name: str) -> list[str]:
        """Ids of this user's batch jobs that Cobalt still holds by ``job_name``."""
        return parse_find(self.run(find_argv(job_name, self.user)), job_name)

    def backfill(self, queue: str) -> list[BackfillWindow]:
        """Nothing: Cobalt shows no backfill windows (see the module's text)."""
        return []

    def cancel(self, job_id: str) -> None:
        """``qdel`` the batch job (Cobalt ignores one that has ended)."""
        out = self.run(["qdel", job_id])
        if out.returncode != 0:
            raise SchedulerError(f"qdel {job_id} failed: {command_reason(out)}")
