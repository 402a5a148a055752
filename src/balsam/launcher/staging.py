"""Stage-in and stage-out of a job's files on this machine.

Stage-in copies, into the job's working directory, the entries of each parent's working
directory that match the job's ``input_files`` globs (space-separated, ``*`` by default), then
the file or directory named by ``stage_in_url``. Stage-out copies the entries matching
``stage_out_files`` to ``stage_out_url``. URLs go through the site's
:class:`~balsam.platform.transfer.Transfers` (rsync, http(s), Globus; docs/data-movement.md):
one per site in this process, shared by the stager's threads (Globus items are batched
across them), closed by :func:`close_transfers` when the launcher exits. A failure is a
:class:`~balsam.platform.transfer.TransferError` (after the bounded retries), which fails the job.
"""

from __future__ import annotations

import threading
from pathlib import Path

from balsam.backends.base import Backend
from balsam.config import Site
from balsam.platform import transfer
from balsam.schemas.jobs import JobOut
from balsam.schemas.queries import JobQuery, clause_from_kwargs

_transfers: dict[Path, transfer.Transfers] = {}
_transfers_lock = threading.Lock()


def transfers_of(site: Site) -> transfer.Transfers:
    """The site's shared Transfers (made on first use)."""
    with _transfers_lock:
        if site.path not in _transfers:
            _transfers[site.path] = transfer.Transfers(site.settings.transfer)
        return _transfers[site.path]


def close_transfers() -> None:
    """Close every Transfers this process made (the launcher's exit)."""
    with _transfers_lock:
        made = list(_transfers.values())
        _transfers.clear()
    for transfers in made:
        transfers.close()


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
        copied += len(transfers_of(site).stage_in(job.stage_in_url, site.path, workdir))
    return f"staged in {copied} item(s)"


def stage_out(site: Site, job: JobOut) -> str:
    """Copy the job's outputs to ``stage_out_url``; returns a summary for the history."""
    workdir = site.job_dir(job.working_directory)
    patterns = transfer.patterns_of(job.stage_out_files)
    copied = transfers_of(site).stage_out(workdir, patterns, job.stage_out_url, site.path)
    return f"staged out {len(copied)} item(s) to {job.stage_out_url}"
