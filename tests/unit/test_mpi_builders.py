"""MPI launch-command builders (exact argv) and how ``find_mpi_launcher`` picks one.

The selection tests put fake programs (small shell scripts) on a tmp ``path``: they test
Balsam's choice of launcher, not any launcher. The real MPICH runs in
tests/e2e/test_mpi_builders_real.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from balsam.errors import ConfigError, LauncherError, ValidationError
from balsam.platform.mpi import (
    MPI_LAUNCHERS,
    AprunLauncher,
    JsrunLauncher,
    LauncherBase,
    MpichLauncher,
    MpiRun,
    OpenMpiLauncher,
    SrunLauncher,
    cray_node_id,
    find_mpi_launcher,
)


def builder(name: str) -> LauncherBase:
    """The builder ``name`` around its default program name."""
    cls, program = MPI_LAUNCHERS[name]
    return cls(executable=program, name=name)


# ---- exact command lines -------------------------------------------------------------------

#: One rank on one host, nothing else set.
SINGLE = MpiRun(argv=["hello"], hosts=["nid00007"])
SINGLE_ARGV = {
    "mpich": ["mpiexec", "-n", "1", "-ppn", "1", "-hosts", "nid00007", "hello"],
    "openmpi": [
        "mpirun", "-n", "1", "--map-by", "ppr:1:node", "--host", "nid00007:1",
        "--bind-to", "none", "hello",
    ],
    "srun": [
        "srun", "--nodes", "1", "--ntasks", "1", "--ntasks-per-node", "1",
        "--cpus-per-task", "1", "--nodelist", "nid00007", "--overlap",
        "--export=ALL", "hello",
    ],
    "aprun": [
        "aprun", "-n", "1", "-N", "1", "-d", "1", "-j", "1", "-L", "7", "-cc", "none", "hello",
    ],
    "jsrun": [
        "jsrun", "-n", "1", "-a", "1", "-c", "1", "-g", "0", "-r", "1", "-b", "none", "hello",
    ],
}  # fmt: skip

#: Two ranks of four threads on one host, bound to cores, with a variable and a job flag.
SINGLE_CORE = MpiRun(
    argv=["hello"],
    hosts=["nid00007"],
    ranks_per_node=2,
    threads_per_rank=4,
    env={"OMP_NUM_THREADS": "4"},
    mpi_flags=["-v"],
    cpu_bind="core",
)
SINGLE_CORE_ARGV = {
    "mpich": [
        "mpiexec", "-n", "2", "-ppn", "2", "-hosts", "nid00007", "-bind-to", "core",
        "-genv", "OMP_NUM_THREADS", "4", "-v", "hello",
    ],
    "openmpi": [
        "mpirun", "-n", "2", "--map-by", "ppr:2:node", "--host", "nid00007:2",
        "--bind-to", "core", "-x", "OMP_NUM_THREADS=4", "-v", "hello",
    ],
    "srun": [
        "srun", "--nodes", "1", "--ntasks", "2", "--ntasks-per-node", "2",
        "--cpus-per-task", "4", "--nodelist", "nid00007", "--overlap",
        "--cpu-bind=cores", "--export=ALL", "-v", "hello",
    ],
    "aprun": [
        "aprun", "-n", "2", "-N", "2", "-d", "4", "-j", "1", "-L", "7", "-cc", "depth",
        "-e", "OMP_NUM_THREADS=4", "-v", "hello",
    ],
    "jsrun": [
        "jsrun", "-n", "2", "-a", "1", "-c", "4", "-g", "0", "-r", "2", "-b", "packed:4",
        "-E", "OMP_NUM_THREADS=4", "-v", "hello",
    ],
}  # fmt: skip

#: Everything at once on two hosts: depth binding, GPUs, hyperthreads, site and job flags.
MULTI = MpiRun(
    argv=["app", "--x", "1"],
    hosts=["nid00012", "nid00013"],
    ranks_per_node=4,
    threads_per_rank=2,
    env={"A": "1", "B": "two words"},
    mpi_flags=["--job-flag"],
    cpu_bind="depth",
    gpus_per_rank=1,
    threads_per_core=2,
    launcher_args=["--site-flag"],
)
MULTI_ARGV = {
    "mpich": [
        "mpiexec", "--site-flag", "-n", "8", "-ppn", "4", "-hosts", "nid00012,nid00013",
        "-bind-to", "core:2", "-genv", "A", "1", "-genv", "B", "two words",
        "--job-flag", "app", "--x", "1",
    ],
    "openmpi": [
        "mpirun", "--site-flag", "-n", "8", "--map-by", "ppr:4:node:PE=2",
        "--host", "nid00012:4,nid00013:4", "--bind-to", "core", "-x", "A=1", "-x", "B=two words",
        "--job-flag", "app", "--x", "1",
    ],
    "srun": [
        "srun", "--site-flag", "--nodes", "2", "--ntasks", "8", "--ntasks-per-node", "4",
        "--cpus-per-task", "2", "--nodelist", "nid00012,nid00013", "--overlap",
        "--gpus-per-task=1", "--cpu-bind=cores", "--export=ALL",
        "--job-flag", "app", "--x", "1",
    ],
    "aprun": [
        "aprun", "--site-flag", "-n", "8", "-N", "4", "-d", "2", "-j", "2", "-L", "12,13",
        "-cc", "depth", "-e", "A=1", "-e", "B=two words", "--job-flag", "app", "--x", "1",
    ],
    "jsrun": [
        "jsrun", "--site-flag", "-n", "8", "-a", "1", "-c", "2", "-g", "1", "-r", "4",
        "-b", "packed:2", "-E", "A=1", "-E", "B=two words", "--job-flag", "app", "--x", "1",
    ],
}  # fmt: skip

CASES = [(SINGLE, SINGLE_ARGV), (SINGLE_CORE, SINGLE_CORE_ARGV), (MULTI, MULTI_ARGV)]


@pytest.mark.parametrize("name", list(MPI_LAUNCHERS))
@pytest.mark.parametrize(("run", "expected"), CASES, ids=["single", "single-core-env", "multi"])
def test_exact_command(name: str, run: MpiRun, expected: dict[str, list[str]]) -> None:
    assert builder(name).command(run) == expected[name]


def test_every_name_has_a_case() -> None:
    for _, expected in CASES:
        assert set(expected) == set(MPI_LAUNCHERS)


#: Each builder's binding flags by mode, for threads_per_rank = 3.
BINDINGS = {
    "mpich": {"none": [], "core": ["-bind-to", "core"], "depth": ["-bind-to", "core:3"]},
    "openmpi": {
        "none": ["--bind-to", "none"],
        "core": ["--bind-to", "core"],
        "depth": ["--bind-to", "core"],
    },
    "srun": {
        "none": [],
        "core": ["--cpu-bind=cores"],
        "depth": ["--cpu-bind=cores"],
    },
    "aprun": {"none": ["-cc", "none"], "core": ["-cc", "depth"], "depth": ["-cc", "depth"]},
    "jsrun": {"none": ["-b", "none"], "core": ["-b", "packed:3"], "depth": ["-b", "packed:3"]},
}  # fmt: skip


@pytest.mark.parametrize("name", list(MPI_LAUNCHERS))
@pytest.mark.parametrize("mode", ["none", "core", "depth"])
def test_binding_flags_follow_the_placement(name: str, mode: str) -> None:
    run = MpiRun(argv=["a"], hosts=["nid1"], threads_per_rank=3, cpu_bind=mode)
    launcher = builder(name)
    flags = BINDINGS[name][mode]
    assert launcher.binding(run) == flags
    tail = [*flags, *launcher.environment(run), "a"]
    assert launcher.command(run)[-len(tail) :] == tail


def test_open_mpi_gives_each_rank_its_cores_only_for_depth() -> None:
    run = MpiRun(argv=["a"], hosts=["h"], ranks_per_node=2, threads_per_rank=3)
    assert "ppr:2:node" in OpenMpiLauncher().command(run)
    assert "ppr:2:node" in OpenMpiLauncher().command(replace(run, cpu_bind="core"))
    assert "ppr:2:node:PE=3" in OpenMpiLauncher().command(replace(run, cpu_bind="depth"))


def test_gpus_reach_srun_and_jsrun_only() -> None:
    run = MpiRun(argv=["a"], hosts=["nid1"], gpus_per_rank=2)
    assert "--gpus-per-task=2" in SrunLauncher().command(run)
    assert JsrunLauncher().placement(run)[6:8] == ["-g", "2"]
    assert MpichLauncher().command(run) == MpichLauncher().command(replace(run, gpus_per_rank=0))
    assert OpenMpiLauncher().command(run) == OpenMpiLauncher().command(
        replace(run, gpus_per_rank=0)
    )
    assert AprunLauncher().command(run) == AprunLauncher().command(replace(run, gpus_per_rank=0))
    assert not any("gpus" in part for part in SrunLauncher().command(replace(run, gpus_per_rank=0)))


def test_srun_passes_no_variables_but_exports_its_environment() -> None:
    plain = SrunLauncher().command(SINGLE)
    assert SrunLauncher().command(replace(SINGLE, env={"SECRET_NAME": "x"})) == plain
    assert "--export=ALL" in plain


def test_executable_is_the_found_program() -> None:
    assert MpichLauncher("/opt/mpi/bin/mpiexec").command(SINGLE)[0] == "/opt/mpi/bin/mpiexec"
    assert SrunLauncher(executable="/usr/bin/srun").command(SINGLE)[0] == "/usr/bin/srun"


def test_default_program_and_name_match_the_table() -> None:
    defaults: list[LauncherBase] = [
        MpichLauncher(), OpenMpiLauncher(), SrunLauncher(), AprunLauncher(), JsrunLauncher()
    ]  # fmt: skip
    assert {d.name: (type(d), d.executable) for d in defaults} == MPI_LAUNCHERS


def test_unknown_cpu_bind_is_refused() -> None:
    with pytest.raises(ValidationError, match="'socket' is not one of none, core, depth"):
        MpiRun(argv=["a"], hosts=["h"], cpu_bind="socket")


def test_mpi_run_counts_ranks_over_hosts() -> None:
    assert MULTI.total_ranks == 8
    assert SINGLE.total_ranks == 1


# ---- aprun node ids -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "node_id"),
    [("nid00012", 12), ("nid00000", 0), ("nid01234.hsn.example", 1234), ("nid00042-hsn0", 42)],
)
def test_cray_node_id_is_the_first_number(host: str, node_id: int) -> None:
    assert cray_node_id(host) == node_id


def test_a_host_without_digits_is_a_launcher_error() -> None:
    with pytest.raises(LauncherError, match="'login' has no digits"):
        cray_node_id("login")
    with pytest.raises(LauncherError, match="'login'"):
        AprunLauncher().command(replace(SINGLE, hosts=["nid00001", "login"]))


# ---- choosing a launcher -------------------------------------------------------------------


def fake_bin(tmp_path: Path, *programs: str, version: str = "HYDRA build details") -> str:
    """A directory holding fake ``programs``, each printing ``version`` for ``--version``."""
    directory = tmp_path / "bin"
    directory.mkdir(exist_ok=True)
    for program in programs:
        path = directory / program
        path.write_text(f"#!/bin/sh\necho '{version}'\n")
        path.chmod(0o755)
    return str(directory)


ALL_PROGRAMS = ("mpiexec", "srun", "jsrun", "aprun")


@pytest.mark.parametrize(
    ("programs", "environ", "expected"),
    [
        (ALL_PROGRAMS, {"SLURM_JOB_ID": "1"}, SrunLauncher),
        (ALL_PROGRAMS, {"SLURM_JOB_ID": "1", "LSB_JOBID": "2", "PBS_JOBID": "3"}, SrunLauncher),
        (ALL_PROGRAMS, {"LSB_JOBID": "2", "PBS_JOBID": "3"}, JsrunLauncher),
        (ALL_PROGRAMS, {"PBS_JOBID": "3.pbs"}, AprunLauncher),
        (ALL_PROGRAMS, {"COBALT_JOBID": "4"}, AprunLauncher),
        (ALL_PROGRAMS, {}, MpichLauncher),
        (("mpiexec", "jsrun", "aprun"), {"SLURM_JOB_ID": "1"}, MpichLauncher),
        (("mpiexec", "srun", "aprun"), {"LSB_JOBID": "2"}, MpichLauncher),
        (("mpiexec", "srun", "jsrun"), {"PBS_JOBID": "3"}, MpichLauncher),
        (("srun",), {"SLURM_JOB_ID": "1"}, SrunLauncher),
    ],
    ids=[
        "slurm", "slurm-first", "lsf", "pbs", "cobalt", "no-batch-job",
        "slurm-without-srun", "lsf-without-jsrun", "pbs-without-aprun", "srun-alone",
    ],
)  # fmt: skip
def test_auto_rules(
    tmp_path: Path, programs: tuple[str, ...], environ: dict[str, str], expected: type
) -> None:
    where = fake_bin(tmp_path, *programs)
    found = find_mpi_launcher("auto", path=where, environ=environ)
    assert type(found) is expected
    assert found is not None
    assert Path(found.executable).parent == Path(where)


def test_auto_asks_mpiexec_whether_it_is_open_mpi(tmp_path: Path) -> None:
    where = fake_bin(tmp_path, "mpiexec", version="mpiexec (Open MPI) 4.1.4")
    found = find_mpi_launcher("auto", path=where, environ={})
    assert isinstance(found, OpenMpiLauncher)
    assert found.executable == str(Path(where) / "mpiexec")


def test_auto_without_mpiexec_is_none(tmp_path: Path) -> None:
    where = fake_bin(tmp_path, "srun", "jsrun", "aprun")
    assert find_mpi_launcher("auto", path=where, environ={}) is None
    assert find_mpi_launcher("auto", path=str(tmp_path), environ={"SLURM_JOB_ID": "1"}) is None


def test_environ_defaults_to_the_process_and_gives_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = fake_bin(tmp_path, "srun")
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert isinstance(find_mpi_launcher("auto", path=where), SrunLauncher)
    found = find_mpi_launcher("auto", environ={"PATH": where, "SLURM_JOB_ID": "7"})
    assert isinstance(found, SrunLauncher)
    assert found.executable == str(Path(where) / "srun")


@pytest.mark.parametrize("name", list(MPI_LAUNCHERS))
def test_a_named_launcher_is_its_program_on_the_path(tmp_path: Path, name: str) -> None:
    cls, program = MPI_LAUNCHERS[name]
    where = fake_bin(tmp_path, program)
    found = find_mpi_launcher(name, path=where, environ={"SLURM_JOB_ID": "1"})
    assert type(found) is cls
    assert found is not None
    assert found.executable == str(Path(where) / program)
    assert found.name == name


@pytest.mark.parametrize("name", list(MPI_LAUNCHERS))
def test_a_named_launcher_that_is_missing_names_its_program(tmp_path: Path, name: str) -> None:
    program = MPI_LAUNCHERS[name][1]
    with pytest.raises(LauncherError, match=f"{program} is not on PATH"):
        find_mpi_launcher(name, path=fake_bin(tmp_path), environ={})


def test_an_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'lam' is unknown") as caught:
        find_mpi_launcher("lam", path=str(tmp_path), environ={})
    assert "one of: auto, none, mpich, openmpi, srun, aprun, jsrun" in str(caught.value)


def test_none_means_no_mpi_even_inside_an_allocation(tmp_path: Path) -> None:
    where = fake_bin(tmp_path, *ALL_PROGRAMS)
    assert find_mpi_launcher("none", path=where, environ={"SLURM_JOB_ID": "1"}) is None
