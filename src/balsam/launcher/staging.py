"""Stage-in and stage-out of a job's files on this machine.

Stage-in copies, into the job's working directory, the entries of each parent's working
directory that match the job's ``input_files`` globs (space-separated, ``*`` by default), then
the file or directory named by ``stage_in_url`` when it is local. Stage-out copies the entries
matching ``stage_out_files`` to ``stage_out_url``. Remote URLs are refused with a clear
:class:`~balsam.platform.transfer.TransferError`: a transfer service moves those.
"""

from __future__ import annotations

from balsam.backends.base import Backend
from balsam.config import Site
from balsam.platform import transfer
from balsam.schemas.jobs import JobOut
from balsam.schemas.queries import JobQuery, clause_from_kwargs


def parents_of(backend: Backend, job: JobOut) -> list[JobOut]:
    """The job's parents (one query)."""
    if not job.parents:
        return []
    clause = clause_from_kwargs({"job_id__in": list(job.parents)})
    return backend.query_jobs(JobQuery(clauses=[clause]))


def copy_inputs(site: Site, job: JobOut, parents: list[JobOut]) -> str:
    """Copy the job's inputs from ``parents`` and its URL into its working directory (files
    only: no database); returns a summary for the history."""
    workdir = site.job_dir(job.working_directory)
    workdir.mkdir(parents=True, exist_ok=True)
    patterns = transfer.patterns_of(job.input_files)
    copied = 0
    if patterns:
        # Same-named files of several parents are all kept: the later ones as NAME_<id8>.
        taken: set[str] = set()
        for parent in parents:
            src = site.job_dir(parent.working_directory)
            if src.is_dir():
                found = transfer.copy_matching(src, patterns, workdir, taken, parent.job_id[:8])
                copied += len(found)
    if job.stage_in_url:
        copied += len(transfer.stage_in_url(job.stage_in_url, site.path, workdir))
    return f"staged in {copied} item(s)"


def stage_out(site: Site, job: JobOut) -> str:
    """Copy the job's outputs to ``stage_out_url``; returns a summary for the history."""
    workdir = site.job_dir(job.working_directory)
    patterns = transfer.patterns_of(job.stage_out_files)
    copied = transfer.stage_out(workdir, patterns, job.stage_out_url, site.path)
    return f"staged out {len(copied)} item(s) to {job.stage_out_url}"
