"""Launcher pieces without a database: placement, run commands, refusals, output tails."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from balsam.config import Site, SiteSettings
from balsam.domain.resources import NodeSpec, ResourceRequest
from balsam.domain.states import JobState
from balsam.launcher import commands
from balsam.launcher.placement import NodePool
from balsam.launcher.updates import match_rejections
from balsam.platform.mpi import MpichLauncher
from balsam.schemas.apps import AppOut
from balsam.schemas.jobs import JobOut, StateUpdate


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


def test_serial_packing_by_share_and_cores() -> None:
    pool = NodePool([NodeSpec("n1", cpus=4)])
    quarter = ResourceRequest(node_packing_count=4)
    placed = [pool.place(quarter, whole_nodes=False) for _ in range(5)]
    assert all(p is not None for p in placed[:4])
    assert placed[4] is None
    first = placed[0]
    assert first is not None
    pool.release(first)
    assert pool.place(quarter, whole_nodes=False) is not None


def test_serial_packing_never_oversubscribes_cores() -> None:
    pool = NodePool([NodeSpec("n1", cpus=2)])
    quarter = ResourceRequest(node_packing_count=4)
    assert pool.place(quarter, False) is not None
    assert pool.place(quarter, False) is not None
    assert pool.place(quarter, False) is None
    assert pool.free_slots(False) == 0


def test_threads_count_against_cores() -> None:
    pool = NodePool([NodeSpec("n1", cpus=4)])
    wide = ResourceRequest(ranks_per_node=2, threads_per_rank=2, node_packing_count=2)
    assert pool.place(wide, False) is not None
    assert pool.place(ResourceRequest(node_packing_count=4), False) is None


def test_single_node_jobs_fill_a_second_node() -> None:
    pool = NodePool([NodeSpec("n1", cpus=1), NodeSpec("n2", cpus=1)])
    hosts = [pool.place(ResourceRequest(), False) for _ in range(2)]
    assert [p.hosts for p in hosts if p] == [("n1",), ("n2",)]


def test_mpi_mode_takes_whole_idle_nodes() -> None:
    pool = NodePool([NodeSpec(f"n{i}", cpus=8) for i in range(3)])
    two = pool.place(ResourceRequest(num_nodes=2), whole_nodes=True)
    assert two is not None and two.hosts == ("n0", "n1")
    assert pool.place(ResourceRequest(num_nodes=2), whole_nodes=True) is None
    one = pool.place(ResourceRequest(), whole_nodes=True)
    assert one is not None and one.hosts == ("n2",)
    assert pool.free_slots(True) == 0
    pool.release(two)
    assert pool.free_slots(True) == 2


def test_job_variables() -> None:
    site = Site(path=Path("/sites/wf"), settings=SiteSettings())
    job = _job(threads_per_rank=4, environ_vars={"FOO": "bar"})
    assert commands.job_variables(job, site) == {
        "FOO": "bar",
        "BALSAM_JOB_ID": job.job_id,
        "BALSAM_DB_PATH": "/sites/wf",
        "OMP_NUM_THREADS": "4",
    }


def _argv(job: JobOut, mpi: MpichLauncher | None, mpi_mode: bool, tmp_path: Path) -> list[str]:
    env = {"PATH": "/usr/bin:/bin"}
    return commands.run_argv(job, APP, ["h1"], mpi, mpi_mode, {"K": "V"}, env, tmp_path)


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


def test_multi_rank_without_mpi_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(commands.CannotRun, match="needs 4 MPI ranks but no MPI launcher"):
        _argv(_job(num_nodes=2, ranks_per_node=2), None, True, tmp_path)


def test_missing_program_is_an_os_error_before_mpiexec(tmp_path: Path) -> None:
    app = AppOut(id=2, name="Nope", executable="no-such-program-xyz")
    with pytest.raises(FileNotFoundError, match="no-such-program-xyz"):
        commands.run_argv(
            _job(), app, ["h"], MpichLauncher(), True, {}, {"PATH": "/usr/bin"}, tmp_path
        )


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    out = tmp_path / "x.out"
    out.write_text("".join(f"line {i}\n" for i in range(100)))
    assert commands.tail(out, 3) == "line 97\nline 98\nline 99"
    assert commands.tail(tmp_path / "missing", 3) == ""


def test_refusals_are_matched_to_jobs_by_id_prefix() -> None:
    batch = [
        StateUpdate(job_id="aaaaaaaa-1", state=JobState.RUNNING),
        StateUpdate(job_id="bbbbbbbb-2", state=JobState.RUNNING),
    ]
    messages = ["job bbbbbbbb (x): cannot move a job from USER_KILLED to RUNNING"]
    assert match_rejections(batch, messages) == {"bbbbbbbb-2": messages[0]}
