"""The ``pbs`` scheduler (PBS Professional, OpenPBS): ``qsub``, ``qstat``, ``qselect``,
``qdel`` and ``pbsnodes``.

Built like the Slurm adapter: a script template (``#PBS`` directives, then the launcher), an
argv builder for each command, a parser of each command's output, a table from PBS's job
states to Balsam's, and a command runner injected by the constructor.

The script asks for the project (``-A``), the queue (``-q``), the nodes (``-l select=N``, one
chunk per host and hosts not shared: ``-l place=scatter:excl``) and the wall time
(``-l walltime``), names the job (``-N``) and joins its output into
``<scripts_dir>/<job id>.OU`` (``-j oe``, ``-o`` a directory). Values are shell-quoted, which
``qsub``'s directive reader understands. The launcher runs for the wall time less
:func:`~balsam.platform.schedulers.commands.safety_margin_minutes`. ``--sched-flags`` go on
the ``qsub`` command line (where they also override the script's directives), never into the
script's text.

Following jobs: ``qstat -f -F json -x`` reports queued, running and finished jobs (``-x``
includes the job history); a job PBS no longer knows ("Unknown Job Id") is GONE. A finished
job's ``Exit_status`` tells how it ended (see :func:`ended_state`). Finding a job by name uses
``qselect -x -u USER -N NAME``, which prints ids only, rather than the full JSON of every
job of every user. Free nodes come from ``pbsnodes -a -F json``: vnodes in state ``free`` that
run no job, hold no reservation and are not tied to another queue; PBS tells no time bound
for them, so each window lasts as long as the queue allows (``math.inf``). A site that ties
queues to nodes by a custom resource rather than the node's ``queue`` attribute is not
understood, and its free nodes are counted for every queue.
"""

from __future__ import annotations

import getpass
import json
import math
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
    hms,
    launcher_minutes,
    only_lines_matching,
    run_command,
)

#: PBS's one-letter job states (``job_state``) in Balsam's terms; F and X (ended) are read
#: with the job's exit status by :func:`ended_state`.
PBS_STATES: dict[str, BatchState] = {
    "Q": BatchState.QUEUED,
    "H": BatchState.QUEUED,
    "W": BatchState.QUEUED,
    "T": BatchState.QUEUED,
    # Suspended jobs wait to resume, as Slurm's SUSPENDED does.
    "S": BatchState.QUEUED,
    "U": BatchState.QUEUED,
    # Moved to another server by peer scheduling: still waiting there, beyond our view.
    "M": BatchState.QUEUED,
    "R": BatchState.RUNNING,
    "E": BatchState.RUNNING,
    "B": BatchState.RUNNING,
}

#: ``Exit_status`` PBS gives a job it killed at its wall time (JOB_EXEC_KILL_WALLTIME); the
#: launcher has stopped its jobs by then, so it counts as finished, like Slurm's TIMEOUT.
EXIT_WALLTIME = -29
#: ``Exit_status`` from this value up is 256 + the signal that killed the job (qdel, or a
#: limit PBS enforces).
EXIT_SIGNALLED = 256
#: What ``qstat`` and ``qdel`` say of a job PBS no longer knows, or one that has ended.
FORGOTTEN = ("Unknown Job Id",)
ENDED = ("Unknown Job Id", "Job has finished")


def directives(request: LaunchRequest, output_dir: Path) -> list[str]:
    """The script's ``#PBS`` lines (values quoted: ``qsub`` reads them with shell quoting)."""
    lines = [
        f"#PBS -N {shlex.quote(request.job_name)}",
        f"#PBS -l select={request.num_nodes}",
        "#PBS -l place=scatter:excl",
        f"#PBS -l walltime={hms(request.wall_time_minutes)}",
        "#PBS -j oe",
        # A path ending in '/' is a directory: PBS names the file <job id>.OU in it.
        f"#PBS -o {shlex.quote(str(output_dir) + '/')}",
    ]
    if request.project:
        lines.append(f"#PBS -A {shlex.quote(request.project)}")
    if request.queue:
        lines.append(f"#PBS -q {shlex.quote(request.queue)}")
    return lines


def submit_argv(request: LaunchRequest, script: Path) -> list[str]:
    """``qsub [FLAGS] SCRIPT``."""
    return ["qsub", *request.sched_flags, str(script)]


def parse_submit(out: CommandResult) -> str:
    """The job id ``qsub`` printed (``1234.server``)."""
    if out.returncode != 0:
        raise SchedulerError(f"qsub refused the launcher job: {command_reason(out)}")
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    job_id = lines[-1] if lines else ""
    if not job_id[:1].isdigit() or " " in job_id:
        raise SchedulerError(f"qsub printed no job id: {out.stdout.strip()[:200]!r}")
    return job_id


def status_argv(ids: Sequence[str]) -> list[str]:
    """``qstat -f -F json -x IDS``: full status, finished jobs included."""
    return ["qstat", "-f", "-F", "json", "-x", *ids]


def parse_status(out: CommandResult, ids: Sequence[str]) -> dict[str, BatchState]:
    """Each job's state; a job ``qstat`` no longer knows is GONE."""
    # qstat exits non-zero when any id is unknown, and still prints the others.
    if out.returncode != 0 and not only_lines_matching(out.stderr, *FORGOTTEN):
        raise SchedulerError(f"qstat failed: {command_reason(out)}")
    jobs = _json_section(out, "qstat", "Jobs")
    by_sequence = {_sequence(job_id): job_id for job_id in jobs}
    found: dict[str, BatchState] = {}
    for job_id in ids:
        # qstat names a job by its full id; a short one (1234 for 1234.server) matches too.
        key = job_id if job_id in jobs else by_sequence.get(_sequence(job_id))
        attrs = jobs.get(key) if key is not None else None
        found[job_id] = BatchState.GONE if attrs is None else job_state(attrs)
    return found


def job_state(attrs: Mapping[str, Any]) -> BatchState:
    """One job's state from its ``qstat -f`` attributes."""
    state = str(attrs.get("job_state", ""))
    if state in ("F", "X"):
        return ended_state(attrs)
    return PBS_STATES.get(state, BatchState.QUEUED)


def ended_state(attrs: Mapping[str, Any]) -> BatchState:
    """How an ended job (F, X) ended, from its ``Exit_status``.

    None: deleted before it ran (CANCELLED). 0, or killed at its wall time: FINISHED.
    256 and up: killed by a signal, as ``qdel`` does (CANCELLED). Anything else: FAILED.
    """
    status = attrs.get("Exit_status")
    if status is None:
        return BatchState.CANCELLED
    try:
        code = int(status)
    except (TypeError, ValueError):
        return BatchState.FAILED
    if code in (0, EXIT_WALLTIME):
        return BatchState.FINISHED
    return BatchState.CANCELLED if code >= EXIT_SIGNALLED else BatchState.FAILED


def find_argv(job_name: str, user: str) -> list[str]:
    """``qselect`` for ``user``'s jobs named ``job_name``, finished ones included."""
    return ["qselect", "-x", "-u", user, "-N", job_name]


def parse_find(out: CommandResult) -> list[str]:
    """The job ids ``qselect`` printed (separated by white space)."""
    if out.returncode != 0:
        raise SchedulerError(f"qselect failed: {command_reason(out)}")
    return out.stdout.split()


def backfill_argv() -> list[str]:
    """``pbsnodes -a -F json``: every vnode and its attributes."""
    return ["pbsnodes", "-a", "-F", "json"]


def parse_backfill(out: CommandResult, queue: str) -> list[BackfillWindow]:
    """One window of the wholly free vnodes that ``queue`` may use, unbounded in time."""
    if out.returncode != 0:
        raise SchedulerError(f"pbsnodes failed: {command_reason(out)}")
    nodes = _json_section(out, "pbsnodes", "nodes")
    free = sum(1 for attrs in nodes.values() if _free_for(attrs, queue))
    return [BackfillWindow(queue, free, math.inf)] if free else []


def _free_for(attrs: Any, queue: str) -> bool:
    """Whether a vnode is free, runs no job, holds no reservation and serves ``queue``."""
    if not isinstance(attrs, Mapping) or attrs.get("state") != "free":
        return False
    if attrs.get("jobs") or attrs.get("resv"):
        return False
    tied = attrs.get("queue")
    return tied is None or tied == queue


def _json_section(out: CommandResult, program: str, key: str) -> dict[str, Any]:
    """The ``key`` object of a PBS ``-F json`` document (empty when absent or no output)."""
    if not out.stdout.strip():
        return {}
    try:
        # strict=False: PBS copies attribute values (the job's environment) as they are,
        # control characters included.
        document = json.loads(out.stdout, strict=False)
    except ValueError as exc:
        raise SchedulerError(f"{program} printed no JSON: {exc}") from None
    section = document.get(key, {}) if isinstance(document, dict) else None
    if not isinstance(section, dict):
        raise SchedulerError(f"{program} printed JSON without a {key!r} object")
    return section


def _sequence(job_id: str) -> str:
    """The sequence number of a PBS job id (``1234`` of ``1234.server``)."""
    return job_id.split(".", 1)[0]


class PbsScheduler:
    """Submits, follows and cancels launcher batch jobs on PBS Professional or OpenPBS."""

    name = "pbs"

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
        """Write the batch script and ``qsub`` it; returns PBS's job id."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        header = directives(request, request.scripts_dir)
        minutes = launcher_minutes(request.wall_time_minutes)
        text = script_text(request, header, launcher_minutes=minutes)
        try:
            script = write_script(request.scripts_dir, f"pbs_{stamp}_", text)
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
        """Ids of this user's batch jobs that PBS still knows by ``job_name``."""
        return parse_find(self.run(find_argv(job_name, self.user)))

    def backfill(self, queue: str) -> list[BackfillWindow]:
        """The wholly free vnodes ``queue`` may use, with no time bound."""
        return parse_backfill(self.run(backfill_argv()), queue)

    def cancel(self, job_id: str) -> None:
        """``qdel`` the batch job (one that has ended already is left as it is)."""
        out = self.run(["qdel", job_id])
        if out.returncode != 0 and not only_lines_matching(out.stderr, *ENDED):
            raise SchedulerError(f"qdel {job_id} failed: {command_reason(out)}")
