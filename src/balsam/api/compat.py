"""What Balsam 0.5 scripts call on a ``BalsamJob`` beyond its fields.

Read-only helpers on the job's history, app and working directory, under their 0.5 names and
with 0.5's return values (``get_state_times`` gives naive local datetimes, as 0.5's history
text held them; ``state_history`` is that text, rebuilt from the events). :class:`Job` binds
each of them as a method or property.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from balsam.api.apps import App
from balsam.api.context import get_site
from balsam.domain.functions import call_text
from balsam.domain.jobenv import balsam_variables, handler_variables
from balsam.errors import ConfigError
from balsam.schemas.jobs import EventOut

if TYPE_CHECKING:
    from balsam.api.jobs import Job

#: How 0.5 wrote a time in a job's history (``[MM-DD-YYYY HH:MM:SS.ffffff STATE] message``).
HISTORY_TIME_FORMAT = "%m-%d-%Y %H:%M:%S.%f"


def num_ranks(job: Job) -> int:
    """MPI ranks in all: nodes times ranks per node."""
    return job.num_nodes * job.ranks_per_node


def app_cmd(job: Job) -> str:
    """The command line the job runs: its app's executable and its arguments (for a function
    app, the call: ``mypkg.sim:run(1, steps=10)``)."""
    app = App.objects.get(name=job.application)
    if app.function:
        return call_text(app.function, job.function_args, job.function_kwargs)
    line = f"{app.executable} {job.args}"
    return " ".join(os.path.expanduser(word) for word in line.split())


def get_child_by_name(job: Job, name: str) -> Job:
    """The one child named ``name`` (ValueError for none or several, as in 0.5)."""
    found = list(job.get_children().filter(name=name))
    if not found:
        raise ValueError(f"no child named {name!r}")
    if len(found) > 1:
        raise ValueError(f"more than one child named {name!r}")
    return found[0]


def read_file_in_workdir(job: Job, fname: str) -> str:
    """The text of a file in the job's working directory (ValueError when missing)."""
    path = Path(job.working_directory) / fname
    if not path.is_file():
        raise ValueError(f"{fname} not found in working directory of {job.cute_id}")
    return path.read_text()


def get_envs(job: Job, *, timeout: bool = False, error: bool = False) -> dict[str, str]:
    """The variables the launcher gives the job's processes (its ``environ_vars`` and
    Balsam's; ``timeout``/``error``: as its postprocess gets them as a handler)."""
    site = get_site()
    if site is None:
        raise ConfigError("no active workflow database (set BALSAM_DB_PATH)")
    own = balsam_variables(job.job_id or "", str(site.path), job.parents, job.threads_per_rank)
    return {**job.environ_vars, **own, **handler_variables(error, timeout)}


def required_num_cores(job: Job) -> int:
    """Cores the job takes on a node in serial mode: ranks x threads / threads per core."""
    return max(1, job.ranks_per_node * job.threads_per_rank // job.threads_per_core)


def get_application(job: Job) -> App:
    """The job's app (``App.DoesNotExist`` when it is not registered)."""
    return App.objects.get(name=job.application)


def app_preprocess(job: Job) -> str:
    """The preprocess command of the job's app."""
    return get_application(job).preprocess


def app_postprocess(job: Job) -> str:
    """The postprocess command of the job's app."""
    return get_application(job).postprocess


def app_envscript(job: Job) -> str | None:
    """The app's envscript, when it names an existing file (else None, as in 0.5)."""
    script = get_application(job).envscript
    return script if script and os.path.isfile(script) else None


def get_parents_by_id(job: Job) -> list[str]:
    """The ids of the job's parents."""
    return list(job.parents)


def get_children_by_id(job: Job) -> list[str]:
    """The ids of the jobs that wait for this one."""
    return [child.job_id or "" for child in job.get_children()]


def parse_envstring(text: str) -> dict[str, str]:
    """0.5's ``"A=1:B=2"`` environment text as a dict."""
    found: dict[str, str] = {}
    for part in text.split(":"):
        name, sep, value = part.partition("=")
        if sep and name.strip():
            found[name.strip()] = value
    return found


def to_dict(job: Job) -> dict[str, object]:
    """Every field and the bookkeeping (id, state, working directory), by name."""
    from balsam.api.jobs import FIELDS

    values: dict[str, object] = {name: getattr(job, name) for name in FIELDS}
    values.update(job_id=job.job_id, state=job.state.value, parents=list(job.parents))
    if job.job_id is not None:
        values["working_directory"] = job.working_directory
    return values


def state_history(job: Job) -> str:
    """Every state change, one ``[time STATE] message`` line each (0.5's text)."""
    return "\n".join(_history_line(e) for e in _events(job))


def get_recent_state_str(job: Job) -> str:
    """The last line of ``state_history``."""
    lines = state_history(job).splitlines()
    return lines[-1].strip() if lines else ""


def get_state_times(job: Job) -> dict[str, datetime]:
    """When the job last entered each state it entered (naive UTC times)."""
    return {e.to_state: _local(e.timestamp) for e in _events(job)}


def runtime_seconds(job: Job) -> float | None:
    """Seconds from the start of its last finished run (RUNNING) to its end (RUN_DONE)."""
    return last_run_seconds(_events(job))


def last_run_seconds(events: Sequence[EventOut]) -> float | None:
    """Seconds of the last RUNNING -> RUN_DONE in ``events`` (None without one)."""
    started: datetime | None = None
    seconds: float | None = None
    for event in events:
        if event.to_state == "RUNNING":
            started = event.timestamp
        elif event.to_state == "RUN_DONE" and started is not None:
            seconds = (event.timestamp - started).total_seconds()
            started = None
    return seconds


def _events(job: Job) -> list[EventOut]:
    return [] if job.job_id is None else job.history()


def _local(when: datetime) -> datetime:
    """``when`` as a naive UTC time, as 0.5's history lines held it."""
    return when.astimezone(UTC).replace(tzinfo=None)


def _history_line(event: EventOut) -> str:
    stamp = _local(event.timestamp).strftime(HISTORY_TIME_FORMAT)
    return f"[{stamp} {event.to_state}] {event.message}".rstrip()
