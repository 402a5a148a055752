"""Platform adapters: MPI command builders, node discovery, local transfers, the local scheduler."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from balsam.errors import ConfigError, LauncherError
from balsam.platform import nodes, transfer
from balsam.platform.mpi import (
    MpichLauncher,
    MpiRun,
    OpenMpiLauncher,
    find_mpi_launcher,
    search_path,
)
from balsam.platform.schedulers import SCHEDULERS, LaunchRequest, get_scheduler
from balsam.platform.schedulers.base import format_minutes, script_text

# Exact argv of every builder: tests/unit/test_mpi_builders.py.


def test_one_rank_on_one_host() -> None:
    run = MpiRun(argv=["echo", "hi"], hosts=["h"])
    assert run.total_ranks == 1
    assert MpichLauncher().command(run) == [
        "mpiexec",
        "-n",
        "1",
        "-ppn",
        "1",
        "-hosts",
        "h",
        "echo",
        "hi",
    ]


def _fake_program(directory: Path, name: str, version_text: str) -> Path:
    """A real executable that prints ``version_text`` like ``mpiexec --version`` would."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\necho '{version_text}'\n")
    path.chmod(0o755)
    return path


def test_auto_finds_mpich_hydra(tmp_path: Path) -> None:
    prog = _fake_program(tmp_path / "bin", "mpiexec", "HYDRA build details: Version 5.0")
    found = find_mpi_launcher("auto", path=str(tmp_path / "bin"))
    assert isinstance(found, MpichLauncher)
    assert found.executable == str(prog)


def test_auto_recognises_open_mpi(tmp_path: Path) -> None:
    _fake_program(tmp_path / "bin", "mpiexec", "mpiexec (Open MPI) 4.1.4")
    found = find_mpi_launcher("auto", path=str(tmp_path / "bin"))
    assert isinstance(found, OpenMpiLauncher)


def test_auto_without_mpi_is_none_and_none_means_none(tmp_path: Path) -> None:
    assert find_mpi_launcher("auto", path=str(tmp_path)) is None
    assert find_mpi_launcher("none") is None


def test_named_launcher_must_exist_and_names_must_be_known(tmp_path: Path) -> None:
    with pytest.raises(LauncherError, match="mpirun is not on PATH"):
        find_mpi_launcher("openmpi", path=str(tmp_path))
    with pytest.raises(ConfigError, match="unknown"):
        find_mpi_launcher("lam-mpi", path=str(tmp_path))
    _fake_program(tmp_path, "mpirun", "whatever")
    assert isinstance(find_mpi_launcher("openmpi", path=str(tmp_path)), OpenMpiLauncher)


def test_search_path_adds_the_running_pythons_bin() -> None:
    parts = search_path({"PATH": "/usr/bin"}).split(os.pathsep)
    assert parts[0] == "/usr/bin"
    assert str(Path(sys.executable).parent) in parts


def test_the_venv_mpich_is_found() -> None:
    found = find_mpi_launcher("auto", path=search_path({"PATH": ""}))
    assert isinstance(found, MpichLauncher)


def test_local_host_is_one_node_with_its_cores() -> None:
    found = nodes.discover_nodes(environ={})
    assert len(found) == 1
    assert found[0].hostname == nodes.local_hostname()
    assert found[0].cpus == len(os.sched_getaffinity(0))
    assert found[0].gpus == 0


def test_settings_override_node_sizes() -> None:
    found = nodes.discover_nodes(cpus_per_node=64, gpus_per_node=4, environ={})
    assert (found[0].cpus, found[0].gpus) == (64, 4)


def test_allocation_sources_come_before_the_local_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(env: Mapping[str, str]) -> list[str] | None:
        return env["FAKE_HOSTS"].split(",") if "FAKE_HOSTS" in env else None

    monkeypatch.setitem(nodes.NODE_SOURCES, "fake", fake)
    assert nodes.allocation_hosts({"FAKE_HOSTS": "a,b"}) == ("fake", ["a", "b"])
    assert nodes.allocation_hosts({})[0] == "local"
    found = nodes.discover_nodes(cpus_per_node=8, environ={"FAKE_HOSTS": "a,b"})
    assert [(n.hostname, n.cpus) for n in found] == [("a", 8), ("b", 8)]


def test_local_path_accepts_paths_and_file_urls_only(tmp_path: Path) -> None:
    assert transfer.local_path("/data/x", tmp_path) == Path("/data/x")
    assert transfer.local_path("file:///data/x%20y", tmp_path) == Path("/data/x y")
    assert transfer.local_path("in/x", tmp_path) == tmp_path / "in/x"
    assert transfer.local_path("globus://endpoint/x", tmp_path) is None
    assert transfer.local_path("https://example.org/x", tmp_path) is None
    assert transfer.local_path("file://otherhost/x", tmp_path) is None


def test_copy_matching_copies_files_and_directories(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "a.dat").write_text("a")
    (src / "b.txt").write_text("b")
    (src / "sub" / "c.dat").write_text("c")
    copied = transfer.copy_matching(src, transfer.patterns_of("*.dat sub"), dst)
    assert sorted(p.name for p in copied) == ["a.dat", "sub"]
    assert (dst / "a.dat").read_text() == "a"
    assert (dst / "sub" / "c.dat").read_text() == "c"
    assert not (dst / "b.txt").exists()


def test_stage_in_and_out_refuse_unknown_schemes_and_missing_sources(tmp_path: Path) -> None:
    with pytest.raises(transfer.TransferError, match=r"the scheme ftp:// is not supported"):
        transfer.stage_in_url("ftp://host/x", tmp_path, tmp_path / "job")
    with pytest.raises(transfer.TransferError, match="does not exist"):
        transfer.stage_in_url(str(tmp_path / "missing"), tmp_path, tmp_path / "job")
    with pytest.raises(transfer.TransferError, match="for stage-in only"):
        transfer.stage_out(tmp_path, ["*"], "https://x/y", tmp_path)


def test_unknown_scheduler_is_a_config_error() -> None:
    assert "local" in SCHEDULERS
    assert get_scheduler("local").name == "local"
    with pytest.raises(ConfigError, match="slurmish"):
        get_scheduler("slurmish")


def test_batch_script_runs_the_launcher_in_the_site(tmp_path: Path) -> None:
    request = LaunchRequest(
        project="P", queue="Q", wall_time_minutes=0.05, num_nodes=2, job_mode="serial",
        site_path=tmp_path / "my wf", scripts_dir=tmp_path, wf_filter="test",
        balsam_argv=["/venv/bin/balsam"],
    )  # fmt: skip
    text = script_text(request, ["#SBATCH -A P"])
    assert text.startswith("#!/bin/bash\n#SBATCH -A P\n")
    assert f"export BALSAM_DB_PATH='{tmp_path}/my wf'" in text
    assert text.rstrip().endswith(
        "exec /venv/bin/balsam launcher --consume-all --job-mode serial "
        "--time-limit-minutes 0.05 --wf-filter test"
    )
    assert format_minutes(5.0) == "5"


def test_balsam_05_local_urls_are_local_paths(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("x")
    copied = transfer.stage_in_url(f"local:{tmp_path / 'in.txt'}", tmp_path, tmp_path / "job")
    assert [p.name for p in copied] == ["in.txt"]
    out = tmp_path / "out"
    out.mkdir()
    transfer.stage_out(tmp_path / "job", ["*.txt"], f"local:{out}", tmp_path)
    assert (out / "in.txt").read_text() == "x"


def test_gsiftp_is_refused_naming_what_to_use(tmp_path: Path) -> None:
    with pytest.raises(transfer.TransferError, match=r"GridFTP \(gsiftp://\) is not supported"):
        transfer.stage_in_url("gsiftp://host/path", tmp_path, tmp_path / "job")
    with pytest.raises(transfer.TransferError, match="rsync://HOST/MODULE/PATH, HOST:PATH"):
        transfer.stage_out(tmp_path, ["*"], "gsiftp://host/path", tmp_path)


def test_scp_urls_run_the_real_scp(tmp_path: Path) -> None:
    """The real scp binary; with no ssh server here the source is this host's path (scp then
    copies locally: the same argv a HOST:PATH gets, bar the host)."""
    src = tmp_path / "remote"
    (src / "sub").mkdir(parents=True)
    (src / "a.dat").write_text("a")
    (src / "sub" / "b.dat").write_text("b")
    job = tmp_path / "job"
    copied = transfer.stage_in_url(f"scp:{src}/a.dat", tmp_path, job)
    assert copied == [job / "a.dat"] and (job / "a.dat").read_text() == "a"
    transfer.stage_in_url(f"scp:{src}/sub", tmp_path, job)
    assert (job / "sub" / "b.dat").read_text() == "b"
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    sent = transfer.stage_out(job, ["*.dat", "sub"], f"scp:{outbox}/", tmp_path)
    assert sorted(p.name for p in sent) == ["a.dat", "sub"]
    assert (outbox / "sub" / "b.dat").read_text() == "b"
    with pytest.raises(transfer.TransferError, match="scp failed"):
        transfer.stage_in_url(f"scp:{src}/missing", tmp_path, job)
