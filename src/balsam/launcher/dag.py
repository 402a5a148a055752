"""Balsam's ``dag`` module: what a job's own script uses to grow the workflow while it runs.

The launcher starts every job with ``BALSAM_JOB_ID`` and ``BALSAM_DB_PATH`` in its environment,
so a script can do::

    from balsam.launcher import dag
    print(dag.current_job.name, [p.name for p in dag.parents])
    dag.spawn_child(name="analysis", application="Analyze", args="--input out.dat")

``JOB_ID``, ``current_job``, ``parents`` and ``children`` are looked up when read (not at
import, which stays cheap and opens no database); outside a Balsam job they are None, as in
Balsam 0.x. ``current_job`` is one object per process, as 0.5's module attribute was: changes
made to it stay until ``save()`` writes them. ``ERROR`` and ``TIMEOUT`` say whether this
process is the app's postprocess run as the error or timeout handler (``BALSAM_JOB_ERROR``,
``BALSAM_JOB_TIMEOUT``), ``LAUNCHER_NODES`` how many nodes the launcher has. The database is
the one ``BALSAM_DB_PATH`` names, unless a Backend was injected with
:func:`balsam.api.use_backend`.
"""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from balsam.api.apps import App
from balsam.api.context import get_backend
from balsam.api.jobs import FIELDS, Job, job_id_of
from balsam.api.query import JobQuerySet
from balsam.config import known_sites
from balsam.errors import ConfigError, NotFound, SchedulerError, ValidationError

#: Balsam 0.x names, re-exported as the old module did.
BalsamJob = Job
ApplicationDefinition = App

# Resolved on each read by ``__getattr__`` below; declared so type checkers know them.
JOB_ID: str | None
current_job: Job | None
parents: JobQuerySet | None
children: JobQuerySet | None
ERROR: bool
TIMEOUT: bool
LAUNCHER_NODES: int

__all__ = [
    "ERROR",
    "JOB_ID",
    "LAUNCHER_NODES",
    "TIMEOUT",
    "ApplicationDefinition",
    "BalsamJob",
    "add_app",
    "add_dependency",
    "add_job",
    "children",
    "clone",
    "current_job",
    "current_job_id",
    "get_active_database",
    "get_apps",
    "get_current_job",
    "get_database_paths",
    "kill",
    "parents",
    "spawn_child",
    "submit",
    "wf_from_template",
]

#: The current job, read once per process (by the job id it was read for).
_current: dict[str, Job] = {}

JobRef = Job | str | uuid.UUID


def current_job_id() -> str | None:
    """The id of the job this process runs for (``BALSAM_JOB_ID``), or None."""
    return os.environ.get("BALSAM_JOB_ID", "").strip() or None


def get_current_job() -> Job | None:
    """The job this process runs for, or None outside a Balsam job: read from the database
    the first time, the same object after."""
    job_id = current_job_id()
    if job_id is None:
        return None
    if job_id not in _current:
        try:
            _current[job_id] = Job.from_out(get_backend().get_job(job_id))
        except NotFound:
            raise NotFound(
                f"BALSAM_JOB_ID={job_id} names no job in this workflow database"
            ) from None
    return _current[job_id]


def _flag(variable: str) -> bool:
    return os.environ.get(variable, "") == "TRUE"


def _launcher_nodes() -> int:
    try:
        return max(1, int(os.environ.get("BALSAM_LAUNCHER_NODES", "1")))
    except ValueError:
        return 1


def __getattr__(name: str) -> Any:
    """Module attributes computed when read: the current job and its neighbours."""
    if name == "JOB_ID":
        return current_job_id()
    if name == "ERROR":
        return _flag("BALSAM_JOB_ERROR")
    if name == "TIMEOUT":
        return _flag("BALSAM_JOB_TIMEOUT")
    if name == "LAUNCHER_NODES":
        return _launcher_nodes()
    if name == "current_job":
        return get_current_job()
    if name in ("parents", "children"):
        job = get_current_job()
        if job is None:
            return None
        return job.get_parents() if name == "parents" else job.get_children()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _require_current_job() -> Job:
    job = get_current_job()
    if job is None:
        raise ConfigError(
            "no current job: BALSAM_JOB_ID is not set "
            "(spawn_child works inside a job started by a Balsam launcher)"
        )
    return job


def add_job(
    name: str | None = None,
    workflow: str | None = None,
    application: str | None = None,
    *,
    save: bool = True,
    **fields: Any,
) -> Job:
    """Create and save a job from ``fields`` (those of ``BalsamJob``, plus ``parents``);
    ``name``, ``workflow`` and ``application`` may come first by position, as in 0.5;
    ``save=False`` returns it unsaved."""
    for key, value in (("name", name), ("workflow", workflow), ("application", application)):
        if value is not None:
            fields[key] = value
    job = Job(**fields)
    if save:
        job.save()
    return job


def add_dependency(parent: JobRef | JobQuerySet, child: JobRef | JobQuerySet) -> None:
    """Make ``child`` wait for ``parent`` (jobs, full ids or unique id prefixes).

    Refuses a self-dependency or a cycle (:class:`balsam.errors.DependencyError`).
    """
    backend = get_backend()
    parent, child = _one_job(parent), _one_job(child)
    backend.add_dependency(job_id_of(parent, backend), job_id_of(child, backend))
    if isinstance(child, Job):
        # The new edge may have sent the child back to AWAITING_PARENTS (or to FAILED, for a
        # failed parent): the object the caller holds must say what the database says.
        child.refresh_state()


def _one_job(ref: JobRef | JobQuerySet) -> JobRef:
    """The job a one-job query set holds (0.5 took those too); other references as given."""
    if not isinstance(ref, JobQuerySet):
        return ref
    found = list(ref[:2])
    if len(found) != 1:
        raise ValidationError(f"a dependency needs one job, the query set holds {len(ref)}")
    return found[0]


def spawn_child(clone: bool = False, **fields: Any) -> Job:
    """A new job that depends on the current one, created in one step.

    It runs in the current job's workflow unless ``workflow`` is given; with ``clone=True``
    it starts as a copy of every field of the current job and ``fields`` override them.
    Extra ``parents`` may be given; the current job is always one.
    """
    parent = _require_current_job()
    base: dict[str, Any] = {"workflow": parent.workflow}
    if clone:
        base = {name: copy.deepcopy(getattr(parent, name)) for name in FIELDS}
    base.update(fields)
    extra = list(base.pop("parents", ()))
    child = Job(**base)
    child.set_parents([parent, *extra])
    child.save()
    return child


def kill(job: JobRef, recursive: bool = True) -> list[str]:
    """Kill ``job`` and, unless ``recursive=False``, every job below it (recursive by default,
    as in Balsam 0.5); returns the ids killed."""
    backend = get_backend()
    killed = backend.kill_jobs(job_id_of(job, backend), recursive)
    if isinstance(job, Job):
        job.refresh_state()
    return killed


def clone(job: Job, **fields: Any) -> Job:
    """A new, unsaved job with every field of ``job`` (not its id, state, history or working
    directory), ``fields`` overriding them; ValidationError for a name that is no field."""
    unknown = sorted(set(fields) - set(FIELDS) - {"parents"})
    if unknown:
        raise ValidationError(f"not job fields: {', '.join(unknown)}")
    values = {name: copy.deepcopy(getattr(job, name)) for name in FIELDS}
    values.update(fields)
    return Job(**values)


def wf_from_template(source_wf: str, new_wf: str, **overrides: dict[str, Any]) -> JobQuerySet:
    """Copy every job of workflow ``source_wf`` into the new workflow ``new_wf`` with the
    same dependencies between them; ``overrides`` maps a job's name to fields to change.

    ValidationError when ``source_wf`` has no jobs, when ``new_wf`` has some already, or when
    two source jobs share a name (the copies' dependencies are matched by name).
    """
    source = list(Job.objects.filter(workflow=source_wf))
    if not source:
        raise ValidationError(f"no jobs in workflow {source_wf!r} to copy")
    if Job.objects.filter(workflow=new_wf).exists():
        raise ValidationError(f"workflow {new_wf!r} has jobs already: give a new name")
    names = [job.name for job in source]
    if len(set(names)) != len(names):
        raise ValidationError(f"jobs of {source_wf!r} share names: cannot match their parents")
    by_id = {job.job_id: job.name for job in source}
    copies = {
        job.name: clone(job, workflow=new_wf, **overrides.get(job.name, {})) for job in source
    }
    for job in _parents_first(source):
        made = copies[job.name]
        made.set_parents([copies[by_id[p]] for p in job.parents if p in by_id])
        made.save()
    return Job.objects.filter(workflow=new_wf)


def _parents_first(jobs: list[Job]) -> Iterator[Job]:
    """``jobs`` ordered so that each comes after its parents among them."""
    ids = {job.job_id for job in jobs}
    done: set[str | None] = set()
    pending = list(jobs)
    while pending:
        ready = [j for j in pending if all(p in done or p not in ids for p in j.parents)]
        if not ready:  # a cycle cannot be stored; this only guards the loop
            ready = pending[:1]
        for job in ready:
            done.add(job.job_id)
            pending.remove(job)
            yield job


def add_app(
    name: str,
    executable: str,
    description: str = "",
    envscript: str = "",
    preprocess: str = "",
    postprocess: str = "",
    checkexe: bool = False,
) -> App:
    """Register the app ``name`` or change the one of that name (Balsam 0.5's ``add_app``);
    ``checkexe``: refuse an executable that is not on the PATH."""
    import shutil

    program = executable.split()[0] if executable.split() else ""
    if checkexe and not shutil.which(program):
        raise ValidationError(f"no executable {program!r} found on the PATH")
    app, _created = App.objects.get_or_create(name=name)
    app.executable = executable
    app.description = description
    app.envscript = envscript
    app.preprocess = preprocess
    app.postprocess = postprocess
    app.save()
    return app


def get_apps() -> list[App]:
    """Every registered app."""
    return list(App.objects.all())


def get_database_paths(verbose: bool = True) -> list[str]:
    """The workflow databases this user made or activated (``verbose``: print them too)."""
    paths = [str(p) for p in known_sites()]
    if verbose:
        print(f"Found {len(paths)} balsam database location(s)")
        for path in paths:
            print(path)
    return paths


def get_active_database(verbose: bool = True) -> str | None:
    """The active workflow database's path (``BALSAM_DB_PATH``), or None."""
    path = os.environ.get("BALSAM_DB_PATH") or None
    if verbose:
        print(f"Active balsam database path: {path}")
    return str(Path(path).resolve()) if path else None


def submit(
    project: str,
    queue: str,
    nodes: int = 1,
    wall_minutes: float = 30,
    job_mode: str = "mpi",
    wf_filter: str = "",
    sched_flags: str = "",
) -> str:
    """Submit a launcher batch job through ``balsam submit-launch`` (the site's policy and
    scheduler, recorded in ``balsam ls queues``); returns the scheduler's id of it.
    SchedulerError with submit-launch's own line when it refuses. (0.5 queued a launch for
    its service to submit; this submits at once.)"""
    import subprocess

    from balsam.platform.schedulers.base import balsam_entry_point

    argv = [*balsam_entry_point(), "submit-launch", "-A", project, "-q", queue]
    argv += ["-t", f"{wall_minutes:g}", "-n", str(nodes), "--job-mode", job_mode]
    if wf_filter:
        argv += ["--wf-filter", wf_filter]
    if sched_flags:
        argv += ["--sched-flags", sched_flags]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        line = lines[-1].removeprefix("balsam: error: ") if lines else ""
        raise SchedulerError(line or f"submit-launch exited {done.returncode}")
    return done.stdout.split()[2]
