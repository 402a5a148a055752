"""A launcher whose disk fills up for a few seconds carries on, and every job finishes.

The workflow database (SQLite), the launcher's logs and the jobs' directories live on a small
tmpfs mounted for the test (root is needed, as in CI). The first job fills it to the last
byte, holds it full for a few seconds and frees it, while short jobs run beside it: meanwhile
the launcher cannot write its state changes (SQLite: "database or disk is full") nor claim. It
must keep what it cannot write, back off, and resume when the space returns. (A log write that
fails is tested against /dev/full in tests/unit/test_launcher_logs.py: on tmpfs a log keeps
appending into its last page for a while.)
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from balsam.backends.factory import init_site, open_backend
from balsam.config import Site
from launchkit import S, add_app, add_jobs, all_jobs, launch, settings

FILL = """\
dd if=/dev/zero of="$DISK/fill" bs=64k 2>/dev/null
test "$(df --output=avail "$DISK" | tail -1)" -eq 0 && echo full > "$DISK/was-full"
sleep 4
rm -f "$DISK/fill"
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 8 MiB tmpfs, unmounted after the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_disk_full_for_seconds_pauses_the_launcher_and_every_job_finishes(
    small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site: Site = init_site(small_disk / "wf")
    monkeypatch.setenv("BALSAM_DB_PATH", str(site.path))
    settings(site, platform={"cpus_per_node": 4, "mpi_launcher": "none"})
    script = tmp_path / "fill.sh"
    script.write_text(FILL)
    be = open_backend(site)
    try:
        add_app(be, "Fill", f"bash {script}")
        add_app(be, "Nap", "sleep 0.1")
        fill = {"name": "fill", "node_packing_count": 4, "environ_vars": {"DISK": str(small_disk)}}
        add_jobs(be, "Fill", fill)
        add_jobs(be, "Nap", *({"name": f"nap{i}", "node_packing_count": 4} for i in range(150)))
    finally:
        be.close()

    done = launch("--consume-all", "--job-mode", "serial", timeout=180)

    assert done.returncode == 0, done.stderr
    assert (small_disk / "was-full").exists(), "the disk never filled: the test proves nothing"
    be = open_backend(site)
    try:
        states = {job.name: job.state for job in all_jobs(be)}
        assert set(states.values()) == {S.JOB_FINISHED}, states
    finally:
        be.close()
    logs = "".join(p.read_text(errors="replace") for p in (site.path / "log").glob("launcher_*"))
    # The launcher met the full disk (its state changes could not be written for a while).
    assert "database or disk is full" in logs
    assert "Traceback" not in logs
    assert not os.path.exists(small_disk / "fill")


def test_a_read_only_log_directory_is_one_line_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Permissions do not stop root (CI's user): the log directory is a read-only mount."""
    site: Site = init_site(tmp_path / "wf")
    monkeypatch.setenv("BALSAM_DB_PATH", str(site.path))
    be = open_backend(site)
    try:
        add_app(be, "Nap", "true")
        (job,) = add_jobs(be, "Nap", {"name": "nap"})
    finally:
        be.close()
    log_dir = site.path / "log"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(log_dir)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(log_dir)], check=True)
        done = launch("--consume-all", "--job-mode", "serial", timeout=60)
    finally:
        subprocess.run(["umount", "-l", str(log_dir)], check=False)
    assert done.returncode != 0
    line = rf"balsam: error: cannot write the launcher log {re.escape(str(log_dir))}/\S+\.log: "
    assert re.fullmatch(line + "Read-only file system\n", done.stderr), done.stderr
    be = open_backend(site)
    try:
        assert be.get_job(job.job_id).state is S.PREPROCESSED
        assert be.list_sessions() == []
    finally:
        be.close()
