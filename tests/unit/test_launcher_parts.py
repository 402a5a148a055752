"""Launcher pieces without a database: placement, run commands, refusals, output tails."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from balsam.config import Site, SiteSettings
from balsam.domain.resources import NodeSpec, ResourceRequest
from balsam.domain.states import JobState
from balsam.launcher import commands
from balsam.launcher.placement import NodePool, select_nodes
from balsam.platform.mpi import MpichLauncher
from balsam.schemas.apps import AppOut
from balsam.schemas.jobs import JobOut


def _job(**fields: object) -> JobOut:
    now = datetime.now(UTC)
    values: dict[str, object] = {
        "job_id": "0123456789abcdef",
        "name": "hi",
        "workflow": "test",
        "application": "SayHello",
        "args": "'world!'",
        "state": JobState.PREPROCESSED,
        "state_timestamp": now,
        "created_at": now,
        "working_directory": "data/test/hi_01234567",
    }
    values.update(fields)
    return JobOut.model_validate(values)


APP = AppOut(id=1, name="SayHello", executable="echo hello,")


def test_packing_by_share_and_cores() -> None:
    pool = NodePool([NodeSpec("n1", cpus=4)])
    quarter = ResourceRequest(node_packing_count=4)
    placed = [pool.place(quarter) for _ in range(5)]
    assert all(p is not None for p in placed[:4])
    assert placed[4] is None
    first = placed[0]
    assert first is not None
    pool.release(first)
    assert pool.place(quarter) is not None


def test_packing_never_oversubscribes_cores() -> None:
    pool = NodePool([NodeSpec("n1", cpus=2)])
    quarter = ResourceRequest(node_packing_count=4)
    assert pool.place(quarter) is not None
    assert pool.place(quarter) is not None
    assert pool.place(quarter) is None
    assert pool.free_slots(per_cpu=True) == 0


def test_threads_count_against_cores() -> None:
    pool = NodePool([NodeSpec("n1", cpus=4)])
    wide = ResourceRequest(ranks_per_node=2, threads_per_rank=2, node_packing_count=2)
    assert pool.place(wide) is not None
    assert pool.place(ResourceRequest(node_packing_count=4)) is None


def test_hardware_threads_share_cores() -> None:
    pool = NodePool([NodeSpec("n1", cpus=4)])
    smt = ResourceRequest(ranks_per_node=2, threads_per_rank=4, threads_per_core=2)
    placed = pool.place(smt)
    assert placed is not None and placed.cpus == ((0, 1, 2, 3),)


def test_single_node_jobs_fill_a_second_node() -> None:
    pool = NodePool([NodeSpec("n1", cpus=1), NodeSpec("n2", cpus=1)])
    hosts = [pool.place(ResourceRequest()) for _ in range(2)]
    assert [p.hosts for p in hosts if p] == [("n1",), ("n2",)]


def test_multi_node_jobs_take_whole_idle_nodes() -> None:
    pool = NodePool([NodeSpec(f"n{i}", cpus=8, gpus=2) for i in range(3)])
    two = pool.place(ResourceRequest(num_nodes=2))
    assert two is not None and two.hosts == ("n0", "n1")
    assert two.cpus == (tuple(range(8)), tuple(range(8))) and two.gpus == ((0, 1), (0, 1))
    assert pool.place(ResourceRequest(num_nodes=2)) is None
    one = pool.place(ResourceRequest())
    assert one is not None and one.hosts == ("n2",)
    assert pool.place(ResourceRequest(num_nodes=2)) is None
    pool.release(two)
    assert pool.free_slots(per_cpu=False) == 2


def test_packed_jobs_get_distinct_cpus_and_gpus() -> None:
    pool = NodePool([NodeSpec("n1", cpus=8, gpus=4)])
    gpu_job = ResourceRequest(ranks_per_node=2, gpus_per_rank=1, node_packing_count=4)
    first, second = pool.place(gpu_job), pool.place(gpu_job)
    assert first is not None and second is not None
    assert (first.cpus, first.gpus) == (((0, 1),), ((0, 1),))
    assert (second.cpus, second.gpus) == (((2, 3),), ((2, 3),))
    assert pool.place(gpu_job) is None  # no GPUs left, though CPUs are
    pool.release(first)
    third = pool.place(gpu_job)
    assert third is not None and third.gpus == ((0, 1),)


def test_nodes_that_are_not_ready_take_nothing() -> None:
    pool = NodePool([NodeSpec("n1", cpus=1), NodeSpec("n2", cpus=1)])
    pool.set_ready(0, False)
    placed = pool.place(ResourceRequest())
    assert placed is not None and placed.hosts == ("n2",)
    assert pool.place(ResourceRequest()) is None
    assert pool.capacity(per_cpu=True) == 1
    assert pool.place(ResourceRequest(num_nodes=2)) is None


def test_limit_and_offset_select_a_slice_of_the_nodes() -> None:
    nodes = [NodeSpec(f"n{i}", cpus=1) for i in range(5)]
    assert [n.hostname for n in select_nodes(nodes, 2, 1)] == ["n1", "n2"]
    assert [n.hostname for n in select_nodes(nodes, None, 3)] == ["n3", "n4"]
    assert select_nodes(nodes, 2, 5) == []


def test_job_variables() -> None:
    site = Site(path=Path("/sites/wf"), settings=SiteSettings())
    job = _job(threads_per_rank=4, environ_vars={"FOO": "bar"})
    assert commands.job_variables(job, site, mark="h:1:2", launcher_nodes=3) == {
        "FOO": "bar",
        "BALSAM_JOB_ID": job.job_id,
        "BALSAM_DB_PATH": "/sites/wf",
        "BALSAM_PARENT_IDS": "[]",
        "BALSAM_LAUNCHER_NODES": "3",
        "OMP_NUM_THREADS": "4",
        "BALSAM_LAUNCHER": "h:1:2",
    }
    child = job.model_copy(update={"parents": ["p1", "p2"]})
    assert commands.job_variables(child, site)["BALSAM_PARENT_IDS"] == '["p1", "p2"]'


def test_a_postprocess_knows_when_it_runs_as_a_handler() -> None:
    assert commands.handler_variables(JobState.RUN_ERROR) == {"BALSAM_JOB_ERROR": "TRUE"}
    assert commands.handler_variables(JobState.RUN_TIMEOUT) == {"BALSAM_JOB_TIMEOUT": "TRUE"}
    assert commands.handler_variables(JobState.RUN_DONE) == {}
    header = commands.step_log_header("postprocess", "python post.py", JobState.RUN_ERROR)
    assert header == "# Balsam Postprocessor: python post.py\n# Invoked to handle RUN_ERROR\n"
    plain = commands.step_log_header("postprocess", "post", JobState.RUN_DONE)
    assert plain == "# Balsam Postprocessor: post\n"
    assert commands.step_log_header("preprocess", "pre", None) == "# Balsam Preprocessor: pre\n"


def test_gpu_binding_only_for_jobs_that_ask_for_gpus() -> None:
    var = "CUDA_VISIBLE_DEVICES"
    assert commands.gpu_variables(_job(), (), var, {}) == {}
    gpu_job = _job(gpus_per_rank=1, ranks_per_node=2)
    assert commands.gpu_variables(gpu_job, (2, 3), var, {}) == {var: "2,3"}
    # A launcher given GPUs 4-7 by its batch system hands out those.
    given = {var: "4,5,6,7"}
    assert commands.gpu_variables(gpu_job, (0, 1), var, given) == {var: "4,5"}
    assert commands.gpu_variables(gpu_job, (0,), "ROCR_VISIBLE_DEVICES", {}) == {
        "ROCR_VISIBLE_DEVICES": "0"
    }


def _argv(job: JobOut, mpi: MpichLauncher | None, mpi_mode: bool, tmp_path: Path) -> list[str]:
    env = {"PATH": "/usr/bin:/bin"}
    run = commands.run_command(job, APP, ["h1"], mpi, mpi_mode, {"K": "V"}, env, tmp_path)
    assert run.through_mpi == (run.argv[0] == "mpiexec")
    return run.argv


def test_run_command_direct_or_through_mpi(tmp_path: Path) -> None:
    job = _job()
    mpi = MpichLauncher("mpiexec")
    assert _argv(job, None, True, tmp_path) == ["echo", "hello,", "world!"]
    assert _argv(job, mpi, False, tmp_path) == ["echo", "hello,", "world!"]
    wrapped = _argv(job, mpi, True, tmp_path)
    assert wrapped[:7] == ["mpiexec", "-n", "1", "-ppn", "1", "-hosts", "h1"]
    assert wrapped[-3:] == ["echo", "hello,", "world!"]
    multi = _argv(_job(ranks_per_node=2), mpi, False, tmp_path)
    assert multi[:3] == ["mpiexec", "-n", "2"]


def test_mpi_run_carries_binding_gpus_and_site_flags(tmp_path: Path) -> None:
    from balsam.platform.mpi import SrunLauncher

    job = _job(ranks_per_node=2, threads_per_rank=3, gpus_per_rank=1, cpu_affinity="depth")
    run = commands.run_command(
        job, APP, ["n1"], SrunLauncher("srun"), True, {}, {"PATH": "/usr/bin:/bin"}, tmp_path,
        launcher_args=["--mpi=pmi2"],
    )  # fmt: skip
    assert run.through_mpi and run.argv[:2] == ["srun", "--mpi=pmi2"]
    for flag in ("--cpus-per-task", "--gpus-per-task=1", "--cpu-bind=cores"):
        assert any(word.startswith(flag) for word in run.argv), flag
    assert run.argv[run.argv.index("--cpus-per-task") + 1] == "3"


def test_multi_rank_without_mpi_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(commands.CannotRun, match="needs 4 MPI ranks but no MPI launcher"):
        _argv(_job(num_nodes=2, ranks_per_node=2), None, True, tmp_path)


def test_missing_program_is_an_os_error_before_mpiexec(tmp_path: Path) -> None:
    app = AppOut(id=2, name="Nope", executable="no-such-program-xyz")
    with pytest.raises(FileNotFoundError, match="no-such-program-xyz"):
        commands.run_command(
            _job(), app, ["h"], MpichLauncher(), True, {}, {"PATH": "/usr/bin"}, tmp_path
        )


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    out = tmp_path / "x.out"
    out.write_text("".join(f"line {i}\n" for i in range(100)))
    assert commands.tail(out, 3) == "line 97\nline 98\nline 99"
    assert commands.tail(tmp_path / "missing", 3) == ""
