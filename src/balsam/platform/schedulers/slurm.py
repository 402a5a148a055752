"""The ``slurm`` scheduler: launcher batch jobs through ``sbatch``, ``squeue`` and ``scancel``.

Built the way every adapter here is (Parsl's shape): a script template (``#SBATCH``
directives, then the launcher), an argv builder for each command, a parser of each command's
output, a table that translates Slurm's job states into Balsam's, and a command runner injected
by the constructor (the real one runs the programs; unit tests give recorded outputs).

The script asks for the project (``-A``), the partition (``-p``), the nodes (``-N``, whole
nodes: ``--exclusive``) and the wall time (``-t``), and runs ``balsam launcher`` for the wall
time less :func:`safety_margin_minutes`, so the launcher stops its jobs (RUN_TIMEOUT, rerun by
the next launcher) before Slurm kills the allocation. ``--sched-flags`` go on the ``sbatch``
command line, never into the script's text.
"""

from __future__ import annotations

import math
import shlex
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

# The command runner and the margin are shared by every adapter (commands.py); their names
# stay importable from here.
from balsam.platform.schedulers.commands import (
    COMMAND_TIMEOUT_SECONDS as COMMAND_TIMEOUT_SECONDS,
)
from balsam.platform.schedulers.commands import (
    CommandResult,
    CommandRunner,
    run_command,
    safety_margin_minutes,
)
from balsam.platform.schedulers.commands import command_reason as _reason

#: Slurm's job states (squeue ``%T``, scontrol ``JobState``) in Balsam's terms.
SLURM_STATES: dict[str, BatchState] = {
    "PENDING": BatchState.QUEUED,
    "CONFIGURING": BatchState.QUEUED,
    "REQUEUED": BatchState.QUEUED,
    "REQUEUE_HOLD": BatchState.QUEUED,
    "RESV_DEL_HOLD": BatchState.QUEUED,
    "SUSPENDED": BatchState.QUEUED,
    "RUNNING": BatchState.RUNNING,
    "COMPLETING": BatchState.RUNNING,
    "STAGE_OUT": BatchState.RUNNING,
    "SIGNALING": BatchState.RUNNING,
    "RESIZING": BatchState.RUNNING,
    "COMPLETED": BatchState.FINISHED,
    "TIMEOUT": BatchState.FINISHED,
    "PREEMPTED": BatchState.CANCELLED,
    "CANCELLED": BatchState.CANCELLED,
    "REVOKED": BatchState.CANCELLED,
    "DEADLINE": BatchState.CANCELLED,
    "FAILED": BatchState.FAILED,
    "BOOT_FAIL": BatchState.FAILED,
    "NODE_FAIL": BatchState.FAILED,
    "OUT_OF_MEMORY": BatchState.FAILED,
    "SPECIAL_EXIT": BatchState.FAILED,
}


def slurm_time(minutes: float) -> str:
    """``-t`` in Slurm's ``D-HH:MM:SS``, rounded up to a whole second."""
    seconds = int(-(-minutes * 60 // 1))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    return f"{days}-{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def directives(request: LaunchRequest, output: Path) -> list[str]:
    """The script's ``#SBATCH`` lines (each value quoted: it is read by sbatch's own parser)."""
    lines = [
        f"#SBATCH --job-name={shlex.quote(request.job_name)}",
        f"#SBATCH --nodes={request.num_nodes}",
        "#SBATCH --exclusive",
        f"#SBATCH --time={slurm_time(request.wall_time_minutes)}",
        f"#SBATCH --output={shlex.quote(str(output))}",
    ]
    if request.project:
        lines.append(f"#SBATCH --account={shlex.quote(request.project)}")
    if request.queue:
        lines.append(f"#SBATCH --partition={shlex.quote(request.queue)}")
    return lines


def submit_argv(request: LaunchRequest, script: Path) -> list[str]:
    """``sbatch --parsable [FLAGS] SCRIPT``."""
    return ["sbatch", "--parsable", *request.sched_flags, str(script)]


def parse_submit(out: CommandResult) -> str:
    """The job id ``sbatch --parsable`` printed (``ID`` or ``ID;CLUSTER``)."""
    if out.returncode != 0:
        raise SchedulerError(f"sbatch refused the launcher job: {_reason(out)}")
    first = out.stdout.strip().split(";", 1)[0]
    if not first.isdigit():
        raise SchedulerError(f"sbatch printed no job id: {out.stdout.strip()[:200]!r}")
    return first


def status_argv(ids: Sequence[str]) -> list[str]:
    """``squeue`` for these jobs, one ``ID STATE`` line each."""
    return ["squeue", "-h", "-j", ",".join(ids), "-o", "%i %T", "--states=all"]


def parse_status(out: CommandResult, ids: Sequence[str]) -> dict[str, BatchState]:
    """Each job's state; a job squeue no longer lists is GONE."""
    # squeue exits 1 with "Invalid job id" when every id has been forgotten.
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        raise SchedulerError(f"squeue failed: {_reason(out)}")
    found: dict[str, BatchState] = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            job_id, state = parts
            # "CANCELLED by 0" arrives as one word per field; array and het ids keep their id.
            found[job_id] = SLURM_STATES.get(state.split("+")[0], BatchState.QUEUED)
    return {job_id: found.get(job_id, BatchState.GONE) for job_id in ids}


def find_argv(job_name: str) -> list[str]:
    """``squeue`` for the jobs of this user named ``job_name``, one id a line."""
    return ["squeue", "-h", "--me", "--name", job_name, "-o", "%i", "--states=all"]


def parse_find(out: CommandResult) -> list[str]:
    """The job ids ``squeue --name`` printed."""
    if out.returncode != 0:
        raise SchedulerError(f"squeue failed: {_reason(out)}")
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def backfill_argv(queue: str) -> list[str]:
    """``sinfo`` for the idle nodes of partition ``queue``: ``COUNT TIMELIMIT`` lines."""
    return ["sinfo", "-h", "-p", queue, "-t", "idle", "-o", "%D %l"]


def parse_backfill(out: CommandResult, queue: str) -> list[BackfillWindow]:
    """One window per line of idle nodes: as many nodes, for the partition's time limit."""
    if out.returncode != 0:
        raise SchedulerError(f"sinfo failed: {_reason(out)}")
    windows = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) > 0:
            windows.append(BackfillWindow(queue, int(parts[0]), slurm_minutes(parts[1])))
    return windows


def slurm_minutes(limit: str) -> float:
    """Minutes of a Slurm time limit (``[D-]HH:MM:SS``, ``MM:SS``, ``MM``, ``infinite``)."""
    if limit in ("infinite", "UNLIMITED", "NOT_SET", "n/a"):
        return math.inf
    days, _, clock = limit.rpartition("-")
    fields = [float(part) for part in clock.split(":")]
    if len(fields) == 1:
        hours, minutes, seconds = 0.0, fields[0], 0.0
    elif len(fields) == 2:
        hours, minutes, seconds = 0.0, *fields
    else:
        hours, minutes, seconds = fields[-3:]
    return (float(days or 0) * 24 + hours) * 60 + minutes + seconds / 60


class SlurmScheduler:
    """Submits, follows and cancels launcher batch jobs on Slurm."""

    name = "slurm"

    def __init__(self, run: CommandRunner = run_command) -> None:
        self.run = run

    def submit(self, request: LaunchRequest) -> Submission:
        """Write the batch script and ``sbatch`` it; returns Slurm's job id."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        output = request.scripts_dir / "slurm-%j.out"
        minutes = request.wall_time_minutes - safety_margin_minutes(request.wall_time_minutes)
        text = script_text(request, directives(request, output), launcher_minutes=minutes)
        try:
            script = write_script(request.scripts_dir, f"slurm_{stamp}_", text)
        except OSError as exc:
            raise SchedulerError(f"cannot write the launcher script: {exc}") from exc
        job_id = parse_submit(self.run(submit_argv(request, script)))
        return Submission(launch_id=job_id, script=script)

    def status(self, ids: Sequence[str]) -> dict[str, BatchState]:
        """Where each of these batch jobs stands."""
        if not ids:
            return {}
        return parse_status(self.run(status_argv(ids)), ids)

    def find(self, job_name: str) -> list[str]:
        """Ids of this user's batch jobs that Slurm still knows by ``job_name``."""
        return parse_find(self.run(find_argv(job_name)))

    def backfill(self, queue: str) -> list[BackfillWindow]:
        """The partition's idle nodes, each window as long as the partition's time limit."""
        return parse_backfill(self.run(backfill_argv(queue)), queue)

    def cancel(self, job_id: str) -> None:
        """``scancel`` the batch job (one that has ended already is left as it is)."""
        out = self.run(["scancel", job_id])
        if out.returncode != 0 and "Invalid job id" not in out.stderr:
            raise SchedulerError(f"scancel {job_id} failed: {_reason(out)}")
