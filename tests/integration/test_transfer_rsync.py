"""rsync:// against a real rsync daemon, and HOST:PATH over a real sshd, both on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from balsam.platform import transfer
from balsam.platform.transfer.rsync import rsync_argv
from balsam.transfer_settings import TransferSettings
from transferkit import RsyncDaemon, Sshd, free_port

FAST = TransferSettings(max_retries=2, retry_backoff_seconds=0.01, connect_timeout_seconds=2)


def test_stage_in_and_out_through_the_daemon(tmp_path: Path, rsync_daemon: RsyncDaemon) -> None:
    (rsync_daemon.root / "inputs").mkdir()
    (rsync_daemon.root / "inputs" / "a.dat").write_text("alpha")
    (rsync_daemon.root / "inputs" / "b.dat").write_text("beta")
    job = tmp_path / "job"
    got = transfer.stage_in_url(rsync_daemon.url("inputs/"), tmp_path, job, FAST)
    assert sorted(p.name for p in got) == ["a.dat", "b.dat"]
    assert (job / "a.dat").read_text() == "alpha"
    (job / "result.out").write_text("42")
    sent = transfer.stage_out(job, ["*.out"], rsync_daemon.url("results"), tmp_path, FAST)
    assert [p.name for p in sent] == ["result.out"]
    assert (rsync_daemon.root / "results" / "result.out").read_text() == "42"
    assert not (rsync_daemon.root / "results" / ".rsync-partial").exists()


def test_a_missing_source_fails_at_once(tmp_path: Path, rsync_daemon: RsyncDaemon) -> None:
    with pytest.raises(transfer.TransferError, match=r"rsync failed \(23\)") as err:
        transfer.stage_in_url(rsync_daemon.url("nothing.dat"), tmp_path, tmp_path / "job", FAST)
    assert "gave up" not in str(err.value), "a missing file is not retried"


def test_a_refused_connection_is_retried_then_fails(tmp_path: Path) -> None:
    url = f"rsync://127.0.0.1:{free_port()}/data/x"
    with pytest.raises(transfer.TransferError, match=r"gave up after 3 tries") as err:
        transfer.stage_in_url(url, tmp_path, tmp_path / "job", FAST)
    assert "rsync failed (10)" in str(err.value)


def test_rsync_over_a_real_ssh_server(tmp_path: Path, sshd: Sshd) -> None:
    """HOST:PATH through ``ssh -o BatchMode=yes`` to an sshd on a loopback port."""
    settings = FAST.model_copy(update={"ssh_options": sshd.ssh_options})
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "in.txt").write_text("over ssh")
    job = tmp_path / "job"
    got = transfer.stage_in_url(f"127.0.0.1:{remote}/in.txt", tmp_path, job, settings)
    assert got == [job / "in.txt"] and got[0].read_text() == "over ssh"
    (job / "out.txt").write_text("back")
    user = os.environ.get("USER") or "root"
    transfer.stage_out(job, ["out.txt"], f"{user}@127.0.0.1:{remote}/outbox", tmp_path, settings)
    assert (remote / "outbox" / "out.txt").read_text() == "back"


def test_ssh_that_refuses_the_key_fails_at_once(tmp_path: Path, sshd: Sshd) -> None:
    options = [o if not o.endswith("client_key") else "/dev/null" for o in sshd.ssh_options]
    settings = FAST.model_copy(update={"ssh_options": options})
    with pytest.raises(transfer.TransferError, match="Permission denied") as err:
        transfer.stage_in_url("127.0.0.1:/etc/hostname", tmp_path, tmp_path / "job", settings)
    assert "gave up" not in str(err.value)


def test_the_rsync_command_lines() -> None:
    settings = TransferSettings(ssh_options=["-p", "2222"])
    assert rsync_argv(["login1:/x"], "/job/", settings) == [
        "rsync", "-a", "--partial-dir=.rsync-partial", "--timeout=120",
        "-e", "ssh -o BatchMode=yes -o ConnectTimeout=30 -p 2222", "--", "login1:/x", "/job/",
    ]  # fmt: skip
    assert rsync_argv(["rsync://h/m/x"], "/job/", settings) == [
        "rsync", "-a", "--partial-dir=.rsync-partial", "--timeout=120", "--contimeout=30",
        "--", "rsync://h/m/x", "/job/",
    ]  # fmt: skip
