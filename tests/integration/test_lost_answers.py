"""A launcher whose every other call commits and then loses its answer still runs every job
exactly once, strands none and duplicates none (SQLite and PostgreSQL).

The launcher runs in this process on a :class:`balsam.testing.LossyBackend`: each call of each
method goes through to the real database and, every other time, its answer is thrown away and
a transient error raised instead — the worst moment for a dropped connection. The jobs cover
the paths that hold jobs across several calls: plain runs, runs with a postprocess (the task
waits for the database's answer before it), error retries, and children staged in from their
parents.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TypeVar, cast

import pytest

from balsam.backends.base import Backend
from balsam.backends.factory import open_backend
from balsam.config import Site, load_site
from balsam.domain.states import JobState
from balsam.errors import AlreadyExists, TransientError
from balsam.launcher.options import JobMode, LauncherOptions
from balsam.launcher.runner import run_launcher
from balsam.schemas import AppCreate, JobCreate, JobQuery
from balsam.testing.lossy import LossyBackend
from launchkit import settings

S = JobState
R = TypeVar("R")
PLAIN, POST, FLAKY, CHILDREN = 40, 15, 10, 15
#: Appends a line per run: a job run twice has two.
RUN = "sh -c 'echo run >> runs.txt'"


def repeated(call: Callable[[], R], attempts: int = 10) -> R | None:
    """What every caller does with a transient error: send the same call again (an app
    registered by a try whose answer was lost is there: the repeat finds its name taken)."""
    lost = False
    for _ in range(attempts):
        try:
            return call()
        except TransientError:
            lost = True
        except AlreadyExists:
            if not lost:
                raise
            return None
    raise AssertionError("still failing")


def specs() -> list[JobCreate]:
    """The campaign, with ids chosen here so that a repeated create creates nothing new."""
    made: list[JobCreate] = []

    def add(name: str, app: str, **fields: object) -> str:
        job_id = str(uuid.uuid4())
        made.append(
            JobCreate(job_id=job_id, name=name, workflow="w", application=app, **fields)  # type: ignore[arg-type]
        )
        return job_id

    parents = [add(f"plain{i}", "Run") for i in range(PLAIN)]
    for i in range(POST):
        add(f"post{i}", "RunPost")
    for i in range(FLAKY):
        # Fails its first run, succeeds on the retry.
        add(f"flaky{i}", "Flaky", max_error_retries=1)
    for i in range(CHILDREN):
        add(f"child{i}", "Run", parents=[parents[i]], input_files="runs.txt")
    return made


@pytest.fixture
def lossy_site(site: Site) -> Site:
    settings(
        site,
        platform={"cpus_per_node": 4, "mpi_launcher": "none"},
        launcher={
            "flush_interval_seconds": 0.05,
            "heartbeat_seconds": 1,
            "lease_seconds": 30,
            # Small claims: many of them, so that many lose their answers.
            "claim_batch": 6,
        },
    )
    return load_site(site.path)


def test_every_job_ends_once_when_every_other_answer_is_lost(
    lossy_site: Site, backend_of: Backend
) -> None:
    lossy = LossyBackend(open_backend(lossy_site, retry=False))
    backend = cast(Backend, lossy)
    try:
        run_campaign(lossy_site, lossy, backend_of)
    finally:
        backend.close()


def run_campaign(lossy_site: Site, lossy: LossyBackend, backend_of: Backend) -> None:
    backend = cast(Backend, lossy)
    repeated(lambda: backend.create_app(AppCreate(name="Run", executable=RUN)))
    post = AppCreate(name="RunPost", executable=RUN, postprocess="sh -c 'echo post >> posts.txt'")
    repeated(lambda: backend.create_app(post))
    flaky = "sh -c 'echo run >> runs.txt; test $(wc -l < runs.txt) -ge 2'"
    repeated(lambda: backend.create_app(AppCreate(name="Flaky", executable=flaky)))
    campaign = specs()
    repeated(lambda: backend.create_jobs(campaign))
    assert backend_of.count_jobs(JobQuery()) == len(campaign)

    options = LauncherOptions(job_mode=JobMode.SERIAL, consume_all=True)
    assert run_launcher(lossy_site, backend, options) == 0

    # Updates go with a claim when one is due (record_and_claim), alone otherwise: every kind
    # of call lost answers.
    lost = lossy.lost
    assert lost["record_and_claim"] > 3, lost
    assert lost["record_updates"] >= 1 and lost["claim_jobs"] >= 1, lost
    jobs = backend_of.query_jobs(JobQuery())
    assert len(jobs) == len(campaign)
    assert {j.state for j in jobs} == {S.JOB_FINISHED}, [(j.name, j.state) for j in jobs]
    assert all(j.session_id is None for j in jobs)
    assert backend_of.list_sessions() == []
    for job in jobs:
        runs = (lossy_site.job_dir(job.working_directory) / "runs.txt").read_text()
        # A child's runs.txt starts with its parent's line, staged in.
        expected = {"flaky": 2, "child": 2}.get(job.name.rstrip("0123456789"), 1)
        assert runs.splitlines() == ["run"] * expected, job.name
        hops = [(e.from_state, e.to_state) for e in backend_of.history(job.job_id)]
        starts = [h for h in hops if h[1] == "RUNNING"]
        assert len(starts) == (2 if job.name.startswith("flaky") else 1), (job.name, hops)
        assert hops.count(("RUN_DONE", "POSTPROCESSED")) == 1, (job.name, hops)
    for job in jobs:
        if job.name.startswith("post"):
            posts = (lossy_site.job_dir(job.working_directory) / "posts.txt").read_text()
            assert posts == "post\n", job.name
