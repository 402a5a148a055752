"""http(s) stage-in against a real threaded HTTP server on loopback (Range, drops, 503s)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from balsam.platform import transfer
from balsam.transfer_settings import TransferSettings
from transferkit import FileServer, free_port

FAST = TransferSettings(max_retries=3, retry_backoff_seconds=0.01, connect_timeout_seconds=2)
BIG = os.urandom(3 << 20)


def test_a_dropped_connection_resumes_with_a_range_request(
    tmp_path: Path, file_server: FileServer
) -> None:
    (file_server.root / "big.bin").write_bytes(BIG)
    file_server.drop_after["big.bin"] = 1 << 20
    sha = hashlib.sha256(BIG).hexdigest()
    got = transfer.stage_in_url(
        file_server.url(f"big.bin#sha256={sha}"), tmp_path, tmp_path / "job", FAST
    )
    assert got == [tmp_path / "job" / "big.bin"]
    assert got[0].read_bytes() == BIG
    assert file_server.requests == [("big.bin", None), ("big.bin", f"bytes={1 << 20}-")]
    assert not (tmp_path / "job" / "big.bin.part").exists()


def test_a_checksum_mismatch_fails_and_leaves_no_file(
    tmp_path: Path, file_server: FileServer
) -> None:
    (file_server.root / "x.dat").write_bytes(b"the real bytes")
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    with pytest.raises(transfer.TransferError, match="failed its sha256 check") as err:
        transfer.stage_in_url(
            file_server.url(f"x.dat#sha256={wrong}"), tmp_path, tmp_path / "j", FAST
        )
    assert "gave up" not in str(err.value)
    assert list((tmp_path / "j").iterdir()) == []


def test_the_repr_digest_header_is_checked(tmp_path: Path, file_server: FileServer) -> None:
    (file_server.root / "ok.dat").write_bytes(b"fine")
    (file_server.root / "bad.dat").write_bytes(b"fine")
    file_server.digest.update({"ok.dat": True, "bad.dat": True})
    file_server.lie["bad.dat"] = b"not what is sent"
    assert transfer.stage_in_url(file_server.url("ok.dat"), tmp_path, tmp_path / "j", FAST)
    with pytest.raises(transfer.TransferError, match="failed its sha256 check"):
        transfer.stage_in_url(file_server.url("bad.dat"), tmp_path, tmp_path / "j", FAST)


def test_a_404_fails_at_once(tmp_path: Path, file_server: FileServer) -> None:
    with pytest.raises(transfer.TransferError, match="HTTP 404") as err:
        transfer.stage_in_url(file_server.url("missing.dat"), tmp_path, tmp_path / "j", FAST)
    assert "gave up" not in str(err.value)
    assert len(file_server.requests) == 1


def test_a_503_is_retried_then_succeeds(tmp_path: Path, file_server: FileServer) -> None:
    (file_server.root / "slow.dat").write_text("at last")
    file_server.fail_first["slow.dat"] = 2
    got = transfer.stage_in_url(file_server.url("slow.dat"), tmp_path, tmp_path / "j", FAST)
    assert got[0].read_text() == "at last"
    assert len(file_server.requests) == 3


def test_503s_beyond_the_retry_bound_fail(tmp_path: Path, file_server: FileServer) -> None:
    (file_server.root / "down.dat").write_text("never")
    file_server.fail_first["down.dat"] = 10
    with pytest.raises(transfer.TransferError, match=r"HTTP 503.*gave up after 4 tries"):
        transfer.stage_in_url(file_server.url("down.dat"), tmp_path, tmp_path / "j", FAST)
    assert len(file_server.requests) == 4


def test_nothing_listening_is_retried_then_fails(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/x"
    with pytest.raises(transfer.TransferError, match="gave up after 4 tries"):
        transfer.stage_in_url(url, tmp_path, tmp_path / "j", FAST)


def test_http_stage_out_is_refused(tmp_path: Path) -> None:
    with pytest.raises(transfer.TransferError, match="for stage-in only"):
        transfer.stage_out(tmp_path, ["*"], "https://example.org/up", tmp_path, FAST)
