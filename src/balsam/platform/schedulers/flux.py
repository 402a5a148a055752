"""The ``flux`` scheduler: launcher batch jobs through ``flux batch``, ``flux jobs``,
``flux cancel`` and ``flux resource list``.

Built like the Slurm adapter, with the allocation's options on the ``flux batch`` command
line rather than in ``# flux:`` directives, which only newer Flux releases read (RFC 36); an
older one would ignore them and start the launcher on one core. The command asks for whole
nodes (``-N``, ``--exclusive``), the wall time (``-t`` in minutes, ``30m``), the job name
(``--job-name``), the output file ``<scripts_dir>/flux-{{id}}.out`` (``--output``; Flux puts the
job id for ``{{id}}``), the queue (``--queue``) and the project as the job's bank
(``--setattr=bank=...``, what flux-accounting reads; the value is given as a JSON string so
that a project such as ``123`` stays text). ``--sched-flags`` come before the script.

Flux gives a batch script no variable with its hosts, so the script's header asks the
instance (``flux getattr hostlist``) and exports the answer for the launcher's node discovery
(see :mod:`balsam.platform.nodes`); the script stops if Flux cannot answer, rather than start
a launcher that would take the first node for the whole allocation.

Job ids are F58 (``ƒ2bGxD3V``); Flux prints ``ƒ`` or, under some locales, ``f``, and accepts
either, so ids are kept with an ASCII ``f`` and compared that way. ``flux jobs`` reports a job
until it is purged from the job list ("JobID ... unknown": GONE); an inactive job's
``{result}`` tells how it ended. Free nodes come from ``flux resource list``: hosts with free
resources and none allocated (a host shared with a running job is not free for a whole-node
launcher). Flux tells no time bound for them, so each window lasts as long as the queue
allows (``math.inf``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

from balsam.errors import ConfigError, SchedulerError
from balsam.platform.nodes import FLUX_HOSTLIST_VARIABLE, FLUX_URI_VARIABLE, parse_flux_hostlist
from balsam.platform.schedulers.base import (
    BackfillWindow,
    BatchState,
    LaunchRequest,
    Submission,
    format_minutes,
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
)

#: Flux's job states (``{state}``, RFC 21) in Balsam's terms, for jobs still active.
FLUX_STATES: dict[str, BatchState] = {
    "NEW": BatchState.QUEUED,
    "DEPEND": BatchState.QUEUED,
    "PRIORITY": BatchState.QUEUED,
    "SCHED": BatchState.QUEUED,
    "RUN": BatchState.RUNNING,
    "CLEANUP": BatchState.RUNNING,
}
#: How an INACTIVE job ended (``{result}``) in Balsam's terms. TIMEOUT counts as finished,
#: like Slurm's: the launcher has stopped its jobs before the limit.
FLUX_RESULTS: dict[str, BatchState] = {
    "COMPLETED": BatchState.FINISHED,
    "TIMEOUT": BatchState.FINISHED,
    "FAILED": BatchState.FAILED,
    "CANCELED": BatchState.CANCELLED,
}
#: What ``flux cancel`` says of a job that has ended or that Flux has forgotten.
ENDED = ("job is inactive", "unknown job id")


def header() -> list[str]:
    """The script's header: a note, then the host list exported for node discovery."""
    return [
        "# scheduler: flux (the allocation's options are on the flux batch command line)",
        "# Flux gives a batch script no host list variable: ask this instance for it.",
        f"{FLUX_HOSTLIST_VARIABLE}=$(flux getattr hostlist) || exit 1",
        f'export {FLUX_HOSTLIST_VARIABLE} {FLUX_URI_VARIABLE}="$FLUX_URI"',
    ]


def submit_argv(request: LaunchRequest, script: Path, output: str) -> list[str]:
    """``flux batch --job-name NAME -N N --exclusive -t MINUTESm --output OUT [--queue Q]
    [--setattr=bank=P] [FLAGS] SCRIPT``."""
    argv = ["flux", "batch", "--job-name", request.job_name, "-N", str(request.num_nodes)]
    argv += ["--exclusive", "-t", f"{format_minutes(request.wall_time_minutes)}m"]
    argv += ["--output", output]
    if request.queue:
        argv += ["--queue", request.queue]
    if request.project:
        argv.append(f"--setattr=bank={json.dumps(request.project)}")
    return [*argv, *request.sched_flags, str(script)]


def ascii_id(job_id: str) -> str:
    """An F58 job id with an ASCII ``f`` for Flux's ``ƒ`` (Flux accepts both)."""
    job_id = job_id.strip()
    return "f" + job_id[1:] if job_id.startswith("ƒ") else job_id


def parse_submit(out: CommandResult) -> str:
    """The job id ``flux batch`` printed."""
    if out.returncode != 0:
        raise SchedulerError(f"flux batch refused the launcher job: {command_reason(out)}")
    words = out.stdout.split()
    if len(words) != 1:
        raise SchedulerError(f"flux batch printed no job id: {out.stdout.strip()[:200]!r}")
    return ascii_id(words[0])


def status_argv(ids: Sequence[str]) -> list[str]:
    """``flux jobs`` for these jobs, one ``ID STATE [RESULT]`` line each."""
    return ["flux", "jobs", "-n", "-o", "{id.f58} {state} {result}", *ids]


def parse_status(out: CommandResult, ids: Sequence[str]) -> dict[str, BatchState]:
    """Each job's state; a job ``flux jobs`` does not know is GONE."""
    # Newer Flux exits 1 when it knows none of the ids; each unknown one is a stderr line.
    if out.returncode != 0 and not _only_unknown_ids(out.stderr):
        raise SchedulerError(f"flux jobs failed: {command_reason(out)}")
    found: dict[str, BatchState] = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            found[ascii_id(parts[0])] = _state(parts[1], parts[2] if len(parts) > 2 else "")
    return {job_id: found.get(ascii_id(job_id), BatchState.GONE) for job_id in ids}


def _only_unknown_ids(stderr: str) -> bool:
    """Whether every line of ``stderr`` is ``flux jobs``'s "JobID ID unknown"."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return bool(lines) and all(
        line.startswith("JobID ") and line.endswith(" unknown") for line in lines
    )


def _state(state: str, result: str) -> BatchState:
    """One job's state from its ``{state}`` and, once INACTIVE, its ``{result}``."""
    if state == "INACTIVE":
        return FLUX_RESULTS.get(result, BatchState.FAILED)
    return FLUX_STATES.get(state, BatchState.QUEUED)


def find_argv(job_name: str) -> list[str]:
    """``flux jobs`` for this user's jobs named ``job_name`` in any state, one id a line."""
    return ["flux", "jobs", "-n", "-a", "--name", job_name, "-o", "{id.f58}"]


def parse_find(out: CommandResult) -> list[str]:
    """The job ids ``flux jobs --name`` printed."""
    if out.returncode != 0:
        raise SchedulerError(f"flux jobs failed: {command_reason(out)}")
    return [ascii_id(line) for line in out.stdout.splitlines() if line.strip()]


def backfill_argv(queue: str) -> list[str]:
    """``flux resource list`` of free and allocated resources: ``STATE NODELIST`` lines."""
    argv = ["flux", "resource", "list", "-n", "-s", "free,allocated"]
    if queue:
        argv += ["-q", queue]
    return [*argv, "-o", "{state} {nodelist}"]


def parse_backfill(out: CommandResult, queue: str) -> list[BackfillWindow]:
    """One window of the hosts with free resources and none allocated, unbounded in time."""
    if out.returncode != 0:
        raise SchedulerError(f"flux resource list failed: {command_reason(out)}")
    hosts: dict[str, list[str]] = {"free": [], "allocated": []}
    for line in out.stdout.splitlines():
        state, _, nodelist = line.strip().partition(" ")
        if state in hosts and nodelist.strip():
            try:
                hosts[state] += parse_flux_hostlist(nodelist)
            except ConfigError as exc:
                raise SchedulerError(f"flux resource list: {exc}") from None
    busy = set(hosts["allocated"])
    whole = [host for host in dict.fromkeys(hosts["free"]) if host not in busy]
    return [BackfillWindow(queue, len(whole), math.inf)] if whole else []


class FluxScheduler:
    """Submits, follows and cancels launcher batch jobs on Flux."""

    name = "flux"

    def __init__(self, run: CommandRunner = run_command) -> None:
        self.run = run

    def submit(self, request: LaunchRequest) -> Submission:
        """Write the batch script and ``flux batch`` it; returns Flux's job id."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        # Flux fills in {{id}} itself (a mustache template); no shell sees this argument.
        output = str(request.scripts_dir / "flux-{{id}}.out")
        minutes = launcher_minutes(request.wall_time_minutes)
        text = script_text(request, header(), launcher_minutes=minutes)
        try:
            script = write_script(request.scripts_dir, f"flux_{stamp}_", text)
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
        """Ids of this user's batch jobs that Flux still knows by ``job_name``."""
        return parse_find(self.run(find_argv(job_name)))

    def backfill(self, queue: str) -> list[BackfillWindow]:
        """The hosts of ``queue`` with nothing allocated, with no time bound."""
        return parse_backfill(self.run(backfill_argv(queue)), queue)

    def cancel(self, job_id: str) -> None:
        """``flux cancel`` the batch job (one that has ended already is left as it is)."""
        out = self.run(["flux", "cancel", job_id])
        if out.returncode != 0 and not only_lines_matching(out.stderr, *ENDED):
            raise SchedulerError(f"flux cancel {job_id} failed: {command_reason(out)}")
