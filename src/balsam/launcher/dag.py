"""Balsam's ``dag`` module: what a job's own script uses to grow the workflow while it runs.

The launcher starts every job with ``BALSAM_JOB_ID`` and ``BALSAM_DB_PATH`` in its environment,
so a script can do::

    from balsam.launcher import dag
    print(dag.current_job.name, [p.name for p in dag.parents])
    dag.spawn_child(name="analysis", application="Analyze", args="--input out.dat")

``JOB_ID``, ``current_job``, ``parents`` and ``children`` are looked up when read (not at
import, which stays cheap and opens no database); outside a Balsam job they are None, as in
Balsam 0.x. The database is the one ``BALSAM_DB_PATH`` names, unless a Backend was injected with
:func:`balsam.api.use_backend`.
"""

from __future__ import annotations

import copy
import os
import uuid
from typing import Any

from balsam.api.apps import App
from balsam.api.context import get_backend
from balsam.api.jobs import FIELDS, Job, job_id_of
from balsam.api.query import JobQuerySet
from balsam.errors import ConfigError, NotFound

#: Balsam 0.x names, re-exported as the old module did.
BalsamJob = Job
ApplicationDefinition = App

# Resolved on each read by ``__getattr__`` below; declared so type checkers know them.
JOB_ID: str | None
current_job: Job | None
parents: JobQuerySet | None
children: JobQuerySet | None

__all__ = [
    "JOB_ID",
    "ApplicationDefinition",
    "BalsamJob",
    "add_dependency",
    "add_job",
    "children",
    "current_job",
    "current_job_id",
    "get_current_job",
    "kill",
    "parents",
    "spawn_child",
]

JobRef = Job | str | uuid.UUID


def current_job_id() -> str | None:
    """The id of the job this process runs for (``BALSAM_JOB_ID``), or None."""
    return os.environ.get("BALSAM_JOB_ID", "").strip() or None


def get_current_job() -> Job | None:
    """The job this process runs for, or None outside a Balsam job."""
    job_id = current_job_id()
    if job_id is None:
        return None
    try:
        return Job.from_out(get_backend().get_job(job_id))
    except NotFound:
        raise NotFound(f"BALSAM_JOB_ID={job_id} names no job in this workflow database") from None


def __getattr__(name: str) -> Any:
    """Module attributes computed when read: the current job and its neighbours."""
    if name == "JOB_ID":
        return current_job_id()
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


def add_job(**fields: Any) -> Job:
    """Create and save a job from ``fields`` (those of ``BalsamJob``, plus ``parents``)."""
    job = Job(**fields)
    job.save()
    return job


def add_dependency(parent: JobRef, child: JobRef) -> None:
    """Make ``child`` wait for ``parent`` (jobs, full ids or unique id prefixes).

    Refuses a self-dependency or a cycle (:class:`balsam.errors.DependencyError`).
    """
    backend = get_backend()
    backend.add_dependency(job_id_of(parent, backend), job_id_of(child, backend))
    if isinstance(child, Job):
        # The new edge may have sent the child back to AWAITING_PARENTS (or to FAILED, for a
        # failed parent): the object the caller holds must say what the database says.
        child.refresh_state()


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


def kill(job: JobRef, recursive: bool = False) -> list[str]:
    """Kill ``job`` (and with ``recursive`` every job below it); returns the ids killed."""
    backend = get_backend()
    return backend.kill_jobs(job_id_of(job, backend), recursive)
