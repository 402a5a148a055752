"""Container apps end to end: real podman, a real image, real launchers, real mpiexec.

The image is built without a registry, once per module: a busybox-static root filesystem with
a file only the image has (``/etc/balsam-image``), imported with ``podman import``. podman
runs with its own ``containers.conf`` and a fresh image store under the module's temporary
directory (``CONTAINERS_CONF``, ``CONTAINERS_STORAGE_CONF``; docs/containers.md). Launchers
are ``balsam launcher`` subprocesses, as a user starts them; what the tests check is what a
user sees: job states, their history, files in the jobs' working directories.

Without podman, runc or busybox-static installed (scripts/setup.sh installs them) these tests
fail; they never skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from balsam.backends.base import Backend
from balsam.backends.factory import init_site, open_backend
from balsam.config import Site
from launchkit import S, add_app, add_jobs, cli, entered, job_dir, launch, settings

IMAGE = "localhost/balsam-test:1"
IMAGE_TEXT = "made for tests/e2e/test_container_apps.py"
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "container_app.sh"

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
"""


def _podman_env(root: Path) -> dict[str, str]:
    """podman's configuration for this run: what this VM needs, and a store of its own."""
    (root / "containers.conf").write_text(CONTAINERS_CONF)
    (root / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{root}/store"\nrunroot = "{root}/run"\n'
    )
    return {
        "CONTAINERS_CONF": str(root / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
    }


def _build_image(root: Path, env: dict[str, str]) -> None:
    busybox = shutil.which("busybox")
    assert busybox is not None, "busybox-static is not installed (scripts/setup.sh --tests)"
    assert shutil.which("podman") is not None, "podman is not installed (scripts/setup.sh)"
    rootfs = root / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    (rootfs / "tmp").mkdir()
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    for tool in ("sh", "cat", "echo", "env", "ls", "pwd", "sleep", "test"):
        (rootfs / "bin" / tool).symlink_to("busybox")
    (rootfs / "etc" / "balsam-image").write_text(IMAGE_TEXT + "\n")
    tarball = root / "image.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
    subprocess.run(
        ["podman", "import", "--quiet", str(tarball), IMAGE],
        env={**os.environ, **env}, check=True, capture_output=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """podman's environment, with the test image imported into a fresh store (once)."""
    root = tmp_path_factory.mktemp("podman")
    env = _podman_env(root)
    _build_image(root, env)
    yield env
    # Leave no container behind (a failed test may have left one running).
    subprocess.run(
        ["podman", "rm", "--force", "--all"], env={**os.environ, **env},
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def container_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, podman_env: dict[str, str]
) -> Iterator[tuple[Site, Backend]]:
    """An active SQLite site whose launchers run container apps with podman."""
    site = init_site(tmp_path / "wf")
    monkeypatch.setenv("BALSAM_DB_PATH", str(site.path))
    for key, value in podman_env.items():
        monkeypatch.setenv(key, value)
    settings(site, platform={"container_runtime": "podman", "container_args": ["--pull=never"]})
    backend = open_backend(site)
    yield site, backend
    backend.close()


def test_serial_jobs_run_inside_the_image(container_site: tuple[Site, Backend]) -> None:
    """Each job reads the image's file, sees its env, writes into its bound directory; its
    args reach the command as words (no shell on the host, none added inside)."""
    site, be = container_site
    assert not Path("/etc/balsam-image").exists(), "the file must exist only in the image"
    script = 'cat /etc/balsam-image > seen.txt; echo "$WHO $0 $1" >> seen.txt; pwd >> seen.txt'
    add_app(be, "InImage", f"sh -c '{script}'", container=IMAGE)
    jobs = add_jobs(
        be, "InImage",
        *({"name": f"c{i}", "args": f"'arg {i}' '$(id);x'", "environ_vars": {"WHO": f"w{i}"}}
          for i in range(3)),
    )  # fmt: skip
    done = launch("--consume-all", "--job-mode", "serial", timeout=120)
    assert done.returncode == 0, done.stderr
    for i, job in enumerate(jobs):
        assert be.get_job(job.job_id).state is S.JOB_FINISHED
        workdir = job_dir(site, job)
        lines = (workdir / "seen.txt").read_text().splitlines()
        assert lines == [IMAGE_TEXT, f"w{i} arg {i} $(id);x", str(workdir)]


def test_mpi_job_runs_one_container_per_rank(container_site: tuple[Site, Backend]) -> None:
    """mpi mode: ``mpiexec -n 2 ... podman run ... IMAGE cmd``; each rank in its own
    container, knowing its rank (PMI_RANK passed through), writing into the bound directory."""
    site, be = container_site
    add_app(be, "Ranks", "sh -c 'cat /etc/balsam-image > rank-$PMI_RANK.txt'", container=IMAGE)
    (job,) = add_jobs(be, "Ranks", {"name": "mpi", "ranks_per_node": 2})
    done = launch("--consume-all", "--job-mode", "mpi", timeout=120)
    assert done.returncode == 0, done.stderr
    assert be.get_job(job.job_id).state is S.JOB_FINISHED
    workdir = job_dir(site, job)
    assert sorted(p.name for p in workdir.glob("rank-*.txt")) == ["rank-0.txt", "rank-1.txt"]
    for path in workdir.glob("rank-*.txt"):
        assert path.read_text() == IMAGE_TEXT + "\n"


def test_missing_image_fails_the_job_with_the_reason(container_site: tuple[Site, Backend]) -> None:
    _site, be = container_site
    add_app(be, "Gone", "true", container="localhost/no-such-image:1")
    (job,) = add_jobs(be, "Gone", {"name": "gone"})
    done = launch("--consume-all", "--job-mode", "serial", timeout=120)
    assert done.returncode == 0, done.stderr
    assert be.get_job(job.job_id).state is S.FAILED
    error = entered(be, job.job_id, S.RUN_ERROR).message
    assert "exit code 125" in error
    assert "localhost/no-such-image:1: image not known" in error


def test_runtime_not_on_path_fails_the_job_with_the_reason(
    container_site: tuple[Site, Backend], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """podman chosen but absent from the launcher's PATH; Apptainer (not on this machine)."""
    site, be = container_site
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    add_app(be, "NoRuntime", "true", container=IMAGE)
    (job,) = add_jobs(be, "NoRuntime", {"name": "nort"})
    monkeypatch.setenv("PATH", str(empty))
    done = launch("--consume-all", "--job-mode", "serial", timeout=120)
    assert done.returncode == 0, done.stderr
    assert be.get_job(job.job_id).state is S.FAILED
    error = entered(be, job.job_id, S.RUN_ERROR).message
    assert "container runtime 'podman' (platform.container_runtime) cannot be run" in error
    monkeypatch.undo()
    monkeypatch.setenv("BALSAM_DB_PATH", str(site.path))
    settings(site, platform={"container_runtime": "apptainer"})
    (other,) = add_jobs(be, "NoRuntime", {"name": "noapptainer"})
    done = launch("--consume-all", "--job-mode", "serial", timeout=120)
    assert done.returncode == 0, done.stderr
    assert be.get_job(other.job_id).state is S.FAILED
    assert "'apptainer'" in entered(be, other.job_id, S.RUN_ERROR).message


def test_the_example_runs_as_written(tmp_path: Path) -> None:
    """docs/examples/container_app.sh, exactly as the docs show it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BALSAM_", "CONTAINERS_"))}
    done = subprocess.run(
        ["bash", str(EXAMPLE), str(tmp_path / "example")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "greeting: inside balsam-demo|hello, world;echo|" in done.stdout
    assert "INJECTED" not in done.stdout.replace("'world;echo INJECTED'", "")
    assert "ranks: rank-0.txt rank-1.txt" in done.stdout
    assert done.stdout.count("JOB_FINISHED") == 2


# ---- the app's container through the CLI -------------------------------------------------------


def test_cli_registers_lists_and_changes_an_apps_container(
    capsys: pytest.CaptureFixture[str], site: Site, backend_of: Backend
) -> None:
    code, out, err = cli(
        capsys, "app", "--name", "Sim", "--executable", "sim.exe", "--container", IMAGE
    )
    assert (code, err) == (0, "")
    assert out == f"Added app Sim: sim.exe (in container {IMAGE})\n"
    code, out, _ = cli(capsys, "ls", "apps")
    assert code == 0 and "CONTAINER" in out and IMAGE in out
    code, out, err = cli(capsys, "modify", "--type", "apps", "Sim", "container", "docker://x:2")
    assert (code, err) == (0, "")
    (app,) = backend_of.list_apps()
    assert app.container == "docker://x:2"
    code, out, err = cli(capsys, "app", "--name", "Bad", "--executable", "x", "--container", "-v")
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and "container" in err
    assert [a.name for a in backend_of.list_apps()] == ["Sim"]
    code, _, _ = cli(capsys, "modify", "--type", "apps", "Sim", "container", "")
    assert code == 0 and backend_of.list_apps()[0].container == ""
    code, out, _ = cli(capsys, "ls", "apps")
    assert "CONTAINER" not in out


def test_a_local_image_file_is_stored_with_its_absolute_path(
    capsys: pytest.CaptureFixture[str], site: Site, backend_of: Backend,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    (tmp_path / "sim.sif").write_text("")
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "app", "--name", "S", "--executable", "x", "--container", "sim.sif")
    assert (code, err) == (0, "")
    assert backend_of.list_apps()[0].container == str(tmp_path / "sim.sif")


def test_python_api_apps_carry_the_container(site: Site) -> None:
    from balsam.core.models import ApplicationDefinition

    app = ApplicationDefinition(name="Api", executable="sim.exe", container=IMAGE)
    app.save()
    assert ApplicationDefinition.objects.get(name="Api").container == IMAGE
    app.container = "docker://y:1"
    app.save()
    app.refresh_from_db()
    assert app.container == "docker://y:1"


FUNCTION_TASKS = """\
import os
import sys


def inside(tag):
    with open("/etc/balsam-image") as fh:
        seen = fh.read().strip()
    return {"tag": tag, "image": seen, "rank": os.environ.get("PMI_RANK"), "python": sys.executable}
"""


@pytest.mark.parametrize("mode", ["serial", "mpi"])
def test_a_function_app_is_called_inside_the_image(
    container_site: tuple[Site, Backend], tmp_path: Path, mode: str
) -> None:
    """docs/functions.md: a function app with an image runs the runner with the image's
    Python; the call and the outcome pass through the bound working directory, and under
    mpiexec every rank runs its own container and rank 0 (PMI_RANK passed in) answers.

    The busybox image has no Python: the host's /usr is mounted into it read-only (a site
    would use an image with Python), and the user's module through ``container_binds``."""
    site, be = container_site
    code = tmp_path / "usercode"
    code.mkdir()
    (code / "boxtasks.py").write_text(FUNCTION_TASKS)
    host_python = ["--volume", "/usr:/usr:ro", "--volume", "/lib:/lib:ro"]
    host_python += ["--volume", "/lib64:/lib64:ro"]
    settings(
        site,
        platform={
            "container_runtime": "podman",
            "container_args": ["--pull=never", *host_python],
            "container_binds": [str(code)],
        },
    )
    add_app(be, "Inside", "", function="boxtasks:inside", container=IMAGE)
    spec = {"name": "inside", "function_args": [mode], "environ_vars": {"PYTHONPATH": str(code)}}
    if mode == "mpi":
        spec["ranks_per_node"] = 2
    (job,) = add_jobs(be, "Inside", spec)
    done = launch("--consume-all", "--job-mode", mode, timeout=120)
    assert done.returncode == 0, done.stderr
    stored = be.get_job(job.job_id)
    assert stored.state is S.JOB_FINISHED, [e.message for e in be.history(job.job_id)]
    rank = "0" if mode == "mpi" else None
    assert stored.function_outcome == {
        "value": {"tag": mode, "image": IMAGE_TEXT, "rank": rank, "python": "/usr/bin/python3"}
    }
