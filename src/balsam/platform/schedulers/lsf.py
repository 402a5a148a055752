"""The ``lsf`` scheduler (IBM Spectrum LSF): ``bsub``, ``bjobs`` and ``bkill``.

Built like the Slurm adapter, with one difference: the allocation's options go on the ``bsub``
command line, not into ``#BSUB`` lines. LSF reads ``#BSUB`` lines only from a script given on
standard input (``bsub < script``), or from a script argument where the site has set
``LSB_BSUB_PARSE_SCRIPT=Y``; the command runner passes argv and no input, so directives would
be silently ignored on most sites. The script names the scheduler in a comment and runs the
launcher; ``bsub`` runs it as the job's command.

The command asks for the project (``-P``), the queue (``-q``), whole nodes (``-nnodes N``, the
form of LSF with IBM CSM, as on Summit and Sierra-class machines; a cluster that counts slots
instead can be given ``-n``/``-R`` in ``--sched-flags``, though ``-nnodes`` is still passed),
the wall time in whole minutes (``-W``), the job name (``-J``) and the output file
``<scripts_dir>/lsf-<job id>.out`` (``-o`` with ``%J``; without ``-e`` standard error goes
there too). LSF hands the job's command to a shell, so the script path is shell-quoted. The
launcher runs for the wall time less
:func:`~balsam.platform.schedulers.commands.safety_margin_minutes`. ``--sched-flags`` come
before the script on the ``bsub`` command line.

``bjobs -a`` follows jobs until LSF forgets them (``CLEAN_PERIOD`` after they end), and says
"Job <ID> is not found" after that: GONE. ``EXIT`` (a non-zero exit, or ``bkill``) is FAILED.

Backfill: none (always empty). ``bslots`` tells free *slots* and how long they are free, but
not how many hosts they span nor whether a host is wholly free; a slot count reported as a
node count would overstate the window by the slots per node, so this adapter reports nothing
rather than a wrong window.
"""

from __future__ import annotations

import re
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
from balsam.platform.schedulers.commands import (
    CommandResult,
    CommandRunner,
    command_reason,
    launcher_minutes,
    only_lines_matching,
    run_command,
    whole_minutes,
)

#: LSF's job states (``bjobs`` STAT) in Balsam's terms.
LSF_STATES: dict[str, BatchState] = {
    "PEND": BatchState.QUEUED,
    "PROV": BatchState.QUEUED,
    "WAIT": BatchState.QUEUED,
    # Suspended jobs wait to resume, as Slurm's SUSPENDED does.
    "PSUSP": BatchState.QUEUED,
    "USUSP": BatchState.QUEUED,
    "SSUSP": BatchState.QUEUED,
    "RUN": BatchState.RUNNING,
    # mbatchd lost contact with the job's host: the job may well still run.
    "UNKWN": BatchState.RUNNING,
    "DONE": BatchState.FINISHED,
    "EXIT": BatchState.FAILED,
    # Killed while its host was unreachable.
    "ZOMBI": BatchState.CANCELLED,
}

_SUBMITTED = re.compile(r"Job <(\d+)> is submitted")
#: What ``bjobs`` says of a job (or a name) LSF does not know.
NOT_FOUND = ("is not found", "No job found", "No unfinished job found")
#: What ``bkill`` says of a job that has ended or that LSF has forgotten.
ENDED = ("Job has already finished", "No matching job found", "is not found")
#: The script's only header: LSF would not read directives from it (see the module's text).
HEADER = "# scheduler: lsf (the allocation's options are on the bsub command line)"


def submit_argv(request: LaunchRequest, script: Path, output: Path) -> list[str]:
    """``bsub -J NAME -nnodes N -W MINUTES -o OUT [-P P] [-q Q] [FLAGS] 'SCRIPT'``."""
    argv = ["bsub", "-J", request.job_name, "-nnodes", str(request.num_nodes)]
    argv += ["-W", str(whole_minutes(request.wall_time_minutes)), "-o", str(output)]
    if request.project:
        argv += ["-P", request.project]
    if request.queue:
        argv += ["-q", request.queue]
    # LSF runs the command through a shell: the path is quoted as one word.
    return [*argv, *request.sched_flags, shlex.quote(str(script))]


def parse_submit(out: CommandResult) -> str:
    """The job id in ``bsub``'s "Job <ID> is submitted to queue <Q>." line."""
    if out.returncode != 0:
        raise SchedulerError(f"bsub refused the launcher job: {command_reason(out)}")
    found = _SUBMITTED.search(out.stdout)
    if found is None:
        raise SchedulerError(f"bsub printed no job id: {out.stdout.strip()[:200]!r}")
    return found.group(1)


def status_argv(ids: Sequence[str]) -> list[str]:
    """``bjobs`` for these jobs in any state, one ``ID STAT`` line each."""
    return ["bjobs", "-a", "-noheader", "-o", "jobid stat", *ids]


def parse_status(out: CommandResult, ids: Sequence[str]) -> dict[str, BatchState]:
    """Each job's state; a job LSF no longer knows is GONE."""
    # bjobs exits non-zero when any id is unknown, and still prints the others.
    if out.returncode != 0 and not only_lines_matching(out.stderr, *NOT_FOUND):
        raise SchedulerError(f"bjobs failed: {command_reason(out)}")
    found: dict[str, BatchState] = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0][:1].isdigit():
            found[parts[0]] = LSF_STATES.get(parts[1], BatchState.QUEUED)
    return {job_id: found.get(job_id, BatchState.GONE) for job_id in ids}


def find_argv(job_name: str) -> list[str]:
    """``bjobs`` for this user's jobs named ``job_name`` in any state, one id a line."""
    return ["bjobs", "-a", "-noheader", "-J", job_name, "-o", "jobid"]


def parse_find(out: CommandResult) -> list[str]:
    """The job ids ``bjobs -J`` printed (none when it found none)."""
    if out.returncode != 0:
        if only_lines_matching(out.stderr or out.stdout, *NOT_FOUND):
            return []
        raise SchedulerError(f"bjobs failed: {command_reason(out)}")
    return [line.strip() for line in out.stdout.splitlines() if line.strip()[:1].isdigit()]


class LsfScheduler:
    """Submits, follows and cancels launcher batch jobs on IBM Spectrum LSF."""

    name = "lsf"

    def __init__(self, run: CommandRunner = run_command) -> None:
        self.run = run

    def submit(self, request: LaunchRequest) -> Submission:
        """Write the batch script and ``bsub`` it; returns LSF's job id."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        output = request.scripts_dir / "lsf-%J.out"
        minutes = launcher_minutes(request.wall_time_minutes)
        text = script_text(request, [HEADER], launcher_minutes=minutes)
        try:
            script = write_script(request.scripts_dir, f"lsf_{stamp}_", text)
        except OSError as exc:
            raise SchedulerError(f"cannot write the launcher script: {exc}") from exc
        job_id = parse_submit(self.run(submit_argv(request, script, output)))
        return Submission(launch_id=job_id, script=script)

    def status(self, ids: Sequence[str]) -> dict[str, BatchState]:
        """Where each of these batch jobs stands."""
        if not ids:
            return {}
        return parse_status(self.run(status_argv(ids)), ids)

    def find(self, job_name: str) -> list[str]:
        """Ids of this user's batch jobs that LSF still knows by ``job_name``."""
        return parse_find(self.run(find_argv(job_name)))

    def backfill(self, queue: str) -> list[BackfillWindow]:
        """Nothing: LSF tells free slots, not free nodes (see the module's text)."""
        return []

    def cancel(self, job_id: str) -> None:
        """``bkill`` the batch job (one that has ended already is left as it is)."""
        out = self.run(["bkill", job_id])
        if out.returncode != 0 and not only_lines_matching(out.stderr or out.stdout, *ENDED):
            raise SchedulerError(f"bkill {job_id} failed: {command_reason(out)}")
