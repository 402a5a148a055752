"""The Globus adapter through globus-sdk (a real TransferClient) against a local stand-in of
the Transfer API that checks every request (tests/globus_standin.py). Not a real Globus."""

from __future__ import annotations

import json
import stat
import threading
import time
import uuid
from pathlib import Path

import pytest

from balsam.platform import transfer
from balsam.platform.transfer import globus_auth
from balsam.transfer_settings import TransferSettings
from globus_standin import GlobusStandIn
from transferkit import free_port

HERE = str(uuid.uuid4())
THERE = str(uuid.uuid4())


def _settings(tmp_path: Path, standin: GlobusStandIn, **extra: object) -> TransferSettings:
    values: dict[str, object] = {
        "globus_endpoint_id": HERE,
        "globus_client_id": standin.client_id,
        "globus_tokens_file": str(tmp_path / "tokens.json"),
        "batch_window_seconds": 0.5,
        "globus_poll_seconds": 0.05,
        "max_retries": 1,
        "retry_backoff_seconds": 0.01,
    }
    return TransferSettings.model_validate({**values, **extra})


def _save(path: Path, standin: GlobusStandIn, access: str, expires_at: int) -> None:
    globus_auth.save_tokens(
        path,
        {
            globus_auth.TRANSFER_SERVER: {
                "access_token": access,
                "refresh_token": standin.refresh_token,
                "expires_at_seconds": expires_at,
            }
        },
    )


def _stage_in_together(
    transfers: transfer.Transfers, urls: list[str], tmp_path: Path
) -> list[object]:
    """Each URL staged in by its own thread (as the stager's threads do), all at once."""
    results: list[object] = [None] * len(urls)

    def one(i: int) -> None:
        try:
            results[i] = transfers.stage_in(urls[i], tmp_path, tmp_path / f"job{i}")
        except transfer.TransferError as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_two_jobs_items_for_one_endpoint_pair_go_in_one_task(
    tmp_path: Path, globus_standin: GlobusStandIn
) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    for name in ("a.dat", "b.dat"):
        (remote / name).write_text(name)
    settings = _settings(tmp_path, globus_standin)
    _save(settings.tokens_path, globus_standin, globus_standin.token, int(time.time()) + 3600)
    transfers = transfer.Transfers(settings)
    urls = [f"globus://{THERE}{remote}/a.dat", f"globus://{THERE}{remote}/b.dat"]
    try:
        results = _stage_in_together(transfers, urls, tmp_path)
    finally:
        transfers.close()
    assert results == [[tmp_path / "job0" / "a.dat"], [tmp_path / "job1" / "b.dat"]]
    assert (tmp_path / "job1" / "b.dat").read_text() == "b.dat"
    assert globus_standin.problems == []
    [task] = globus_standin.tasks.values()
    assert (task["source_endpoint"], task["destination_endpoint"]) == (THERE, HERE)
    assert sorted(i["source_path"] for i in task["DATA"]) == [f"{remote}/a.dat", f"{remote}/b.dat"]
    assert task["status"] == "SUCCEEDED"


def test_a_failed_task_fails_its_jobs_with_the_reason(
    tmp_path: Path, globus_standin: GlobusStandIn
) -> None:
    settings = _settings(tmp_path, globus_standin)
    _save(settings.tokens_path, globus_standin, globus_standin.token, int(time.time()) + 3600)
    transfers = transfer.Transfers(settings)
    urls = [f"globus://{THERE}/nowhere/x.dat", f"globus://{THERE}/nowhere/y.dat"]
    try:
        results = _stage_in_together(transfers, urls, tmp_path)
    finally:
        transfers.close()
    assert len(globus_standin.tasks) == 1
    for result in results:
        assert isinstance(result, transfer.TransferError)
        assert "failed: /nowhere/x.dat: No such file or directory" in str(result)
    assert globus_standin.problems == []


def test_stage_out_sends_matching_files_to_the_remote_directory(
    tmp_path: Path, globus_standin: GlobusStandIn
) -> None:
    settings = _settings(tmp_path, globus_standin)
    _save(settings.tokens_path, globus_standin, globus_standin.token, int(time.time()) + 3600)
    job = tmp_path / "job"
    job.mkdir()
    (job / "r.out").write_text("result")
    (job / "skip.tmp").write_text("no")
    sent = transfer.stage_out(
        job, ["*.out"], f"globus://{THERE}{tmp_path}/outbox/", tmp_path, settings
    )
    assert sent == [job / "r.out"]
    assert (tmp_path / "outbox" / "r.out").read_text() == "result"
    [task] = globus_standin.tasks.values()
    assert (task["source_endpoint"], task["destination_endpoint"]) == (HERE, THERE)
    assert globus_standin.problems == []


def test_an_expired_access_token_is_refreshed_and_saved_0600(
    tmp_path: Path, globus_standin: GlobusStandIn
) -> None:
    settings = _settings(tmp_path, globus_standin)
    _save(settings.tokens_path, globus_standin, "stale", int(time.time()) - 10)
    job = tmp_path / "job"
    job.mkdir()
    (job / "r.out").write_text("x")
    transfer.stage_out(job, ["*.out"], f"globus://{THERE}{tmp_path}/outbox/", tmp_path, settings)
    assert globus_standin.refreshes == 1
    assert globus_standin.problems == []
    saved = json.loads(settings.tokens_path.read_text())[globus_auth.TRANSFER_SERVER]
    assert saved["access_token"] == globus_standin.token == "access-2"
    assert saved["refresh_token"] == globus_standin.refresh_token
    assert stat.S_IMODE(settings.tokens_path.stat().st_mode) == 0o600


def test_no_token_file_says_to_log_in(tmp_path: Path, globus_standin: GlobusStandIn) -> None:
    settings = _settings(tmp_path, globus_standin)
    with pytest.raises(transfer.TransferError, match="run 'balsam transfer login'"):
        transfer.stage_in_url(f"globus://{THERE}/x", tmp_path, tmp_path / "job", settings)
    assert globus_standin.tasks == {}


def test_an_unreachable_transfer_api_is_retried_then_fails(
    tmp_path: Path, globus_standin: GlobusStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_TRANSFER", f"http://127.0.0.1:{free_port()}/")
    settings = _settings(tmp_path, globus_standin, batch_window_seconds=0.0)
    _save(settings.tokens_path, globus_standin, globus_standin.token, int(time.time()) + 3600)
    with pytest.raises(transfer.TransferError, match="gave up after 2 tries"):
        transfer.stage_in_url(f"globus://{THERE}/x", tmp_path, tmp_path / "job", settings)


def test_the_native_app_login_saves_refresh_tokens_0600(
    tmp_path: Path, globus_standin: GlobusStandIn
) -> None:
    """The interactive part is the user pasting a code: here the stand-in's code is pasted."""
    settings = _settings(tmp_path, globus_standin)
    shown: list[str] = []
    path = globus_auth.login(settings, lambda prompt: globus_standin.login_code, shown.append)
    assert "oauth2/authorize" in shown[0] and globus_standin.client_id in shown[0]
    assert path == settings.tokens_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())[globus_auth.TRANSFER_SERVER]
    assert saved["refresh_token"] == globus_standin.refresh_token
    assert globus_standin.problems == []
    with pytest.raises(transfer.TransferError, match="refused the code"):
        globus_auth.login(settings, lambda prompt: "wrong", shown.append)
