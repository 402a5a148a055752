"""Container runtimes: the exact command lines of Apptainer, Singularity and podman.

Apptainer and Singularity cannot be installed on this machine (docs/containers.md), so their
command lines are checked word for word here, as the launcher builds them: serial runs,
MPI runs (``mpiexec ... apptainer exec IMAGE cmd``), GPU flags, the job's variables, binds.
podman runs for real in tests/e2e/test_container_apps.py.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from balsam.config import PlatformSettings
from balsam.domain.states import JobState
from balsam.errors import ConfigError
from balsam.launcher import commands
from balsam.platform.containers import (
    RANK_VARIABLES,
    ApptainerRuntime,
    ContainerOptions,
    ContainerRun,
    PodmanRuntime,
    SingularityRuntime,
    container_runtime,
    gpu_flag,
)
from balsam.platform.mpi import MpichLauncher
from balsam.schemas.apps import AppCreate, AppOut, AppUpdate

IMAGE = "/soft/images/sim.sif"
WORKDIR = "/lus/wf/data/test/hi_01234567"


def _job(**fields: object) -> commands.JobOut:
    now = datetime.now(UTC)
    values: dict[str, object] = {
        "job_id": "0123456789abcdef",
        "name": "hi",
        "workflow": "test",
        "application": "Sim",
        "args": "--steps 10 'a; rm -rf /'",
        "state": JobState.PREPROCESSED,
        "state_timestamp": now,
        "created_at": now,
        "working_directory": "data/test/hi_01234567",
    }
    values.update(fields)
    return commands.JobOut.model_validate(values)


def _app(image: str = IMAGE, executable: str = "sim.exe") -> AppOut:
    return AppOut(id=1, name="Sim", executable=executable, container=image)


# ---- the adapters ------------------------------------------------------------------------------


def test_apptainer_serial_command_binds_the_workdir_and_passes_the_env() -> None:
    run = ContainerRun(IMAGE, ["sim.exe", "-n", "3"], WORKDIR, {"A": "1", "BALSAM_JOB_ID": "x"})
    made = ApptainerRuntime().command(run)
    assert made.argv == [
        "apptainer", "exec", "--bind", WORKDIR, "--pwd", WORKDIR, IMAGE, "sim.exe", "-n", "3",
    ]  # fmt: skip
    assert made.env == {"APPTAINERENV_A": "1", "APPTAINERENV_BALSAM_JOB_ID": "x"}


def test_apptainer_site_options_cleanenv_binds_and_flags() -> None:
    options = ContainerOptions(
        binds=("/lus/grand", "/soft:/opt/soft:ro"),
        runtime_args=("--debug",),
        args=("--contain",),
        cleanenv=True,
    )
    made = ApptainerRuntime(options).command(ContainerRun(IMAGE, ["sim.exe"], WORKDIR, {"A": "1"}))
    assert made.argv == [
        "apptainer", "--debug", "exec", "--cleanenv",
        "--bind", f"{WORKDIR},/lus/grand,/soft:/opt/soft:ro", "--pwd", WORKDIR,
        "--contain", IMAGE, "sim.exe",
    ]  # fmt: skip
    assert made.env == {"APPTAINERENV_A": "1"}


@pytest.mark.parametrize(("gpu", "flag"), [("nv", "--nv"), ("rocm", "--rocm")])
def test_apptainer_gpu_flag_only_for_gpu_jobs(gpu: str, flag: str) -> None:
    runtime = ApptainerRuntime(ContainerOptions(gpu=gpu, cleanenv=True))
    gpu_run = ContainerRun(IMAGE, ["sim.exe"], WORKDIR, gpus=True)
    assert runtime.command(gpu_run).argv[:4] == ["apptainer", "exec", flag, "--cleanenv"]
    cpu_run = ContainerRun(IMAGE, ["sim.exe"], WORKDIR, gpus=False)
    assert flag not in runtime.command(cpu_run).argv
    none = ApptainerRuntime(ContainerOptions(gpu="none")).command(gpu_run).argv
    assert not {"--nv", "--rocm"} & set(none)


def test_singularity_is_apptainers_command_line_with_its_own_variables() -> None:
    run = ContainerRun(IMAGE, ["sim.exe"], WORKDIR, {"A": "1"}, gpus=True)
    made = SingularityRuntime(ContainerOptions(gpu="nv")).command(run)
    assert made.argv == [
        "singularity", "exec", "--nv", "--bind", WORKDIR, "--pwd", WORKDIR, IMAGE, "sim.exe",
    ]  # fmt: skip
    assert made.env == {"SINGULARITYENV_A": "1"}


def test_podman_command_line() -> None:
    options = ContainerOptions(binds=("/data", "/soft:/opt:ro"), runtime_args=("--root", "/r"))
    made = PodmanRuntime(options).command(
        ContainerRun("localhost/sim:1", ["sim.exe", "x y"], WORKDIR, {"A": "1 2"})
    )
    passed = [word for key in RANK_VARIABLES for word in ("--env", key)]
    assert made.argv == [
        "podman", "--root", "/r", "run", "--rm", "--init", "--network", "host",
        "--volume", f"{WORKDIR}:{WORKDIR}", "--workdir", WORKDIR,
        "--volume", "/data:/data", "--volume", "/soft:/opt:ro",
        "--env", "A=1 2", *passed,
        "localhost/sim:1", "sim.exe", "x y",
    ]  # fmt: skip
    assert made.env == {}
    gpus = PodmanRuntime(ContainerOptions(gpu="nv")).command(
        ContainerRun("img", ["x"], WORKDIR, gpus=True)
    )
    assert gpus.argv[-4:] == ["--device", "nvidia.com/gpu=all", "img", "x"]


def test_runtimes_by_short_name_and_gpu_auto() -> None:
    assert isinstance(container_runtime("singularity"), SingularityRuntime)
    assert isinstance(container_runtime("podman"), PodmanRuntime)
    with pytest.raises(ConfigError, match="container_runtime 'docker' is unknown"):
        container_runtime("docker")
    assert gpu_flag("auto", "CUDA_VISIBLE_DEVICES") == "nv"
    assert gpu_flag("auto", "ROCR_VISIBLE_DEVICES") == "rocm"
    assert gpu_flag("auto", "HIP_VISIBLE_DEVICES") == "rocm"
    assert gpu_flag("none", "HIP_VISIBLE_DEVICES") == "none"


# ---- what the launcher runs --------------------------------------------------------------------


def _fake_runtime(tmp_path: Path, name: str) -> dict[str, str]:
    """A PATH holding an executable named ``name`` (found, never run)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    program = bindir / name
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    return {"PATH": f"{bindir}:/usr/bin:/bin"}


def _run(
    tmp_path: Path, runtime_name: str, job: commands.JobOut, mpi_mode: bool, **platform: object
) -> commands.RunCommand:
    env = _fake_runtime(tmp_path, runtime_name)
    settings = PlatformSettings.model_validate({"container_runtime": runtime_name, **platform})
    runtime = commands.site_container_runtime(settings)
    image = tmp_path / "sim.sif"
    image.write_text("")
    workdir = tmp_path / "job"
    return commands.run_command(
        job, _app(str(image)), ["h1"], MpichLauncher("mpiexec"), mpi_mode,
        {"A": "1"}, env, workdir, container=runtime,
    )  # fmt: skip


def test_serial_run_is_the_runtime_around_the_command_never_a_shell(tmp_path: Path) -> None:
    run = _run(tmp_path, "apptainer", _job(), mpi_mode=False)
    workdir, image = str(tmp_path / "job"), str(tmp_path / "sim.sif")
    assert not run.through_mpi
    assert run.argv == [
        "apptainer", "exec", "--bind", workdir, "--pwd", workdir, image,
        "sim.exe", "--steps", "10", "a; rm -rf /",
    ]  # fmt: skip
    assert run.variables == {"A": "1", "APPTAINERENV_A": "1"}


def test_mpi_run_wraps_the_container_command_not_mpiexec(tmp_path: Path) -> None:
    job = _job(ranks_per_node=4, gpus_per_rank=1)
    run = _run(tmp_path, "singularity", job, mpi_mode=True, container_cleanenv=True)
    workdir, image = str(tmp_path / "job"), str(tmp_path / "sim.sif")
    assert run.through_mpi
    assert run.argv == [
        "mpiexec", "-n", "4", "-ppn", "4", "-hosts", "h1",
        "-genv", "A", "1", "-genv", "SINGULARITYENV_A", "1",
        "singularity", "exec", "--nv", "--cleanenv", "--bind", workdir, "--pwd", workdir,
        image, "sim.exe", "--steps", "10", "a; rm -rf /",
    ]  # fmt: skip


def test_rocm_sites_get_rocm_flag_for_gpu_jobs(tmp_path: Path) -> None:
    job = _job(gpus_per_rank=1)
    run = _run(tmp_path, "apptainer", job, False, gpu_visible_env="ROCR_VISIBLE_DEVICES")
    assert run.argv[:3] == ["apptainer", "exec", "--rocm"]


def test_a_shell_app_runs_its_shell_inside_the_container(tmp_path: Path) -> None:
    env = _fake_runtime(tmp_path, "apptainer")
    app = AppOut(id=1, name="Sh", executable="cat in | wc -l", container="docker://alpine:3")
    run = commands.run_command(
        _job(args="'x; reboot'"), app, ["h"], None, False, {}, env, tmp_path,
        container=ApptainerRuntime(),
    )  # fmt: skip
    here = str(tmp_path)
    assert run.argv == [
        "apptainer", "exec", "--bind", here, "--pwd", here,
        "docker://alpine:3", "/bin/sh", "-c", "cat in | wc -l 'x; reboot'",
    ]  # fmt: skip


def test_runtime_not_on_path_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(commands.CannotRun, match=r"container runtime 'apptainer'.*cannot be run"):
        commands.run_command(
            _job(), _app(), ["h"], None, False, {}, {"PATH": str(tmp_path)}, tmp_path,
            container=ApptainerRuntime(),
        )  # fmt: skip


def test_missing_image_file_cannot_run(tmp_path: Path) -> None:
    env = _fake_runtime(tmp_path, "apptainer")
    missing = str(tmp_path / "gone.sif")
    problem = re.escape(f"container image {missing} does not exist")
    with pytest.raises(commands.CannotRun, match=problem):
        commands.run_command(
            _job(), _app(missing), ["h"], None, False, {}, env, tmp_path,
            container=ApptainerRuntime(),
        )  # fmt: skip
    assert not os.path.exists(missing)


def test_apps_without_a_container_run_as_before(tmp_path: Path) -> None:
    app = AppOut(id=1, name="E", executable="echo hi")
    run = commands.run_command(
        _job(args=""), app, ["h"], None, False, {"A": "1"}, {"PATH": "/usr/bin:/bin"}, tmp_path,
        container=ApptainerRuntime(),
    )  # fmt: skip
    assert run.argv == ["echo", "hi"] and run.variables == {"A": "1"}


# ---- the app's field -----------------------------------------------------------------------------


@pytest.mark.parametrize("image", ["-v", "a b", " img", "img\n"])
def test_container_must_be_one_word_not_a_flag(image: str) -> None:
    with pytest.raises(ValueError, match="container"):
        AppCreate(name="x", executable="true", container=image)
    with pytest.raises(ValueError, match="container"):
        AppUpdate(container=image)


def test_container_defaults_to_none_and_can_be_cleared() -> None:
    assert AppCreate(name="x", executable="true").container == ""
    assert AppUpdate(container="").container == ""
    assert AppCreate(name="x", executable="true", container="docker://a:1").container
