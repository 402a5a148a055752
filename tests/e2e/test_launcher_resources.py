"""What a job's processes get on this machine: CPUs, GPUs, threads, order, and honest refusals.

Node sizes come from the site's platform settings, so a test can give this 2-core machine
four GPUs: Balsam binds GPUs through an environment variable and does not touch the devices,
so the jobs' view of ``CUDA_VISIBLE_DEVICES`` is what is under test. CPU binding is real: the
kernel's ``Cpus_allowed_list`` of each job's process.
"""

from __future__ import annotations

import os

from balsam.backends.base import Backend
from balsam.config import Site
from balsam.schemas.jobs import JobOut
from launchkit import (
    S,
    add_app,
    add_jobs,
    entered,
    job_dir,
    launch,
    settings,
    state_of,
)


def output(site: Site, job: JobOut) -> str:
    """What a job printed."""
    return (job_dir(site, job) / f"{job.name}.out").read_text().strip()


def run_all(*args: str) -> None:
    """Run a ``--consume-all`` launcher to the end."""
    done = launch("--consume-all", *args, timeout=60)
    assert done.returncode == 0, done.stderr


def test_packed_jobs_get_distinct_gpus_in_the_sites_variable(
    site: Site, backend_of: Backend
) -> None:
    settings(site, platform={"cpus_per_node": 4, "gpus_per_node": 4})
    add_app(backend_of, "Gpu", "bash -c 'echo $CUDA_VISIBLE_DEVICES; sleep 1'")
    jobs = add_jobs(
        backend_of, "Gpu", *({"name": f"g{i}", "gpus_per_rank": 1, "node_packing_count": 4}
                             for i in range(4))
    )  # fmt: skip
    run_all("--job-mode", "serial")
    assert sorted(output(site, j) for j in jobs) == ["0", "1", "2", "3"]


def test_gpu_variable_is_configurable_and_only_set_for_gpu_jobs(
    site: Site, backend_of: Backend
) -> None:
    settings(site, platform={"gpus_per_node": 2, "gpu_visible_env": "HIP_VISIBLE_DEVICES"})
    add_app(backend_of, "Gpu", "bash -c 'echo \"[${HIP_VISIBLE_DEVICES-unset}]\"'")
    (two,) = add_jobs(backend_of, "Gpu", {"name": "two", "gpus_per_rank": 2})
    (none,) = add_jobs(backend_of, "Gpu", {"name": "none"})
    run_all("--job-mode", "serial")
    assert output(site, two) == "[0,1]"
    assert output(site, none) == "[unset]"


def test_a_gpu_job_waits_for_a_launcher_with_gpus_on_the_same_database(
    site: Site, backend_of: Backend
) -> None:
    """A launcher without GPUs does not claim a GPU job (a note says why it waits); a later
    allocation with GPUs on the same workflow database runs it."""
    add_app(backend_of, "Gpu", "bash -c 'echo \"[$CUDA_VISIBLE_DEVICES]\"'")
    (job,) = add_jobs(backend_of, "Gpu", {"name": "gpu", "gpus_per_rank": 1})
    (cpu,) = add_jobs(backend_of, "Gpu", {"name": "cpu"})
    run_all("--job-mode", "serial")
    assert state_of(backend_of, cpu.job_id) is S.JOB_FINISHED
    assert state_of(backend_of, job.job_id) is S.PREPROCESSED
    note = backend_of.history(job.job_id)[-1].message
    assert note.startswith("waits: needs more GPUs per node than the launcher on "), note
    settings(site, platform={"gpus_per_node": 1})
    run_all("--job-mode", "serial")
    assert state_of(backend_of, job.job_id) is S.JOB_FINISHED
    assert output(site, job) == "[0]"


def test_a_gpu_job_bigger_than_the_sites_declared_nodes_fails(
    site: Site, backend_of: Backend
) -> None:
    settings(site, platform={"gpus_per_node": 2})
    add_app(backend_of, "Gpu", "true")
    (job,) = add_jobs(backend_of, "Gpu", {"name": "gpu", "gpus_per_rank": 4})
    run_all("--job-mode", "serial")
    assert state_of(backend_of, job.job_id) is S.FAILED
    message = entered(backend_of, job.job_id, S.FAILED).message
    assert message == "can never run: needs 4 GPUs per node; this machine's nodes have 2"


def test_serial_jobs_with_core_affinity_are_bound_to_their_own_cpus(
    site: Site, backend_of: Backend
) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    assert len(cpus) >= 2, "this test needs a machine with two CPUs"
    settings(site, platform={"cpus_per_node": 2})
    add_app(backend_of, "Where", "bash -c 'grep Cpus_allowed_list /proc/self/status; sleep 1'")
    bound = add_jobs(
        backend_of, "Where", *({"name": f"b{i}", "cpu_affinity": "core", "node_packing_count": 2}
                               for i in range(2))
    )  # fmt: skip
    (free,) = add_jobs(backend_of, "Where", {"name": "free"})
    run_all("--job-mode", "serial")
    seen = sorted(output(site, j).split()[-1] for j in bound)
    assert seen == [str(cpus[0]), str(cpus[1])]
    # Without affinity the process may run anywhere the launcher may.
    assert output(site, free).split()[-1] != seen[0]


def test_threads_per_rank_sets_omp_num_threads(site: Site, backend_of: Backend) -> None:
    add_app(backend_of, "Omp", "bash -c 'echo $OMP_NUM_THREADS'")
    (job,) = add_jobs(backend_of, "Omp", {"name": "omp", "threads_per_rank": 2})
    run_all("--job-mode", "serial")
    assert output(site, job) == "2"


def test_biggest_then_longest_jobs_start_first(site: Site, backend_of: Backend) -> None:
    settings(site, platform={"cpus_per_node": 2})
    add_app(backend_of, "Nap", "sleep 0.5")
    small, long_small, big = add_jobs(
        backend_of,
        "Nap",
        {"name": "small", "node_packing_count": 2},
        {"name": "long_small", "node_packing_count": 2, "wall_time_minutes": 10},
        {"name": "big", "threads_per_rank": 2, "node_packing_count": 2},
    )
    run_all("--job-mode", "serial")
    order = sorted(
        (entered(backend_of, j.job_id, S.RUNNING).timestamp, j.name)
        for j in (small, long_small, big)
    )
    assert [name for _, name in order] == ["big", "long_small", "small"]


def test_jobs_needing_more_nodes_are_noted_not_left_waiting_in_silence(
    site: Site, backend_of: Backend
) -> None:
    add_app(backend_of, "Wide", "true")
    (wide,) = add_jobs(backend_of, "Wide", {"name": "wide", "num_nodes": 2})
    for _ in range(2):
        done = launch("--consume-all", "--job-mode", "mpi", timeout=60)
        assert done.returncode == 0, done.stderr
        host = os.uname().nodename
        assert f"1 job(s) wait: needs more nodes than the 1-node launcher on {host}" in done.stderr
    assert state_of(backend_of, wide.job_id) is S.PREPROCESSED
    notes = [e for e in backend_of.history(wide.job_id) if e.from_state == e.to_state]
    assert [n.message for n in notes] == [
        f"waits: needs more nodes than the 1-node launcher on {os.uname().nodename}"
    ]
    run_all("--job-mode", "serial")
    last = backend_of.history(wide.job_id)[-1]
    assert last.message == "waits: a multi-node job runs only under an mpi-mode launcher"
    balsam_ls = launch("--consume-all", "--job-mode", "mpi", "--offset-nodes", "1")
    assert balsam_ls.returncode == 7
    assert balsam_ls.stderr.strip() == (
        "balsam: error: --offset-nodes 1 leaves none of the allocation's 1 node(s)"
    )
