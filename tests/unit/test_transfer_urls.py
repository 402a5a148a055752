"""Which adapter each staging URL goes to, and the small parsers of the adapters (no I/O)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from balsam.config import load_settings
from balsam.errors import ConfigError
from balsam.platform import transfer
from balsam.platform.transfer.globus import parse_globus_url
from balsam.platform.transfer.http import file_name, fragment_checksum, header_checksums
from balsam.platform.transfer.retry import retrying
from balsam.platform.transfer.urls import adapter_name, is_host_path


@pytest.mark.parametrize(
    ("url", "adapter"),
    [
        ("/data/x", "local"),
        ("in/x", "local"),
        ("./a:b", "local"),
        ("dir/a:b", "local"),
        ("C:\\data\\x", "local"),
        ("C:/data/x", "local"),
        ("file:///data/x", "local"),
        ("local:/data/x", "local"),
        ("scp:login1:/data/x", "scp"),
        ("rsync://host/module/x", "rsync"),
        ("rsync://host:8873/module/x", "rsync"),
        ("login1:/data/x", "rsync"),
        ("me@login1.alcf.anl.gov:data/x", "rsync"),
        ("10.0.0.5:/scratch/x", "rsync"),
        ("http://example.org/x", "http"),
        ("HTTPS://example.org/x", "http"),
        ("globus://5e9f0000-0000-0000-0000-000000000000/x", "globus"),
    ],
)
def test_each_url_goes_to_its_adapter(url: str, adapter: str) -> None:
    assert adapter_name(url, "stage in from") == adapter
    assert adapter in transfer.ADAPTERS


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://host/x", "the scheme ftp:// is not supported"),
        ("s3://bucket/x", "the scheme s3:// is not supported"),
        ("gsiftp://host/x", "GridFTP (gsiftp://) is not supported"),
    ],
)
def test_unknown_schemes_are_refused_with_one_line(url: str, words: str) -> None:
    with pytest.raises(transfer.TransferError) as err:
        adapter_name(url, "stage out to")
    assert words in str(err.value) and "\n" not in str(err.value)


def test_host_path_needs_a_host_of_two_characters_and_no_slash_before_the_colon() -> None:
    assert is_host_path("ab:x") and is_host_path("user@ab:")
    assert not is_host_path("a:x")
    assert not is_host_path("/abs/ab:x")
    assert not is_host_path("http:x") and not is_host_path("rsync://h/m")


def test_http_file_names_stay_in_the_job_directory() -> None:
    assert file_name("http://h/dir/data%20set.csv?x=1#sha256=00") == "data set.csv"
    assert file_name("http://h/") == "download"
    assert file_name("http://h/a/..") == "download"
    assert file_name("http://h/x", 'attachment; filename="../../etc/passwd"') == "passwd"
    assert (
        file_name("http://h/x", "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.txt") == "résumé.txt"
    )


def test_checksums_from_the_fragment_and_the_headers() -> None:
    assert fragment_checksum("http://h/x#sha256=ABCD") == ("sha256", "abcd")
    assert fragment_checksum("http://h/x") is None
    with pytest.raises(transfer.TransferError, match="is not #ALGO=HEX"):
        fragment_checksum("http://h/x#crc99=12")
    headers = httpx.Headers(
        [("Repr-Digest", "sha-256=:3q2+7w==:, unknown=:AA==:"), ("Digest", "MD5=3q2+7w==")]
    )
    assert header_checksums(headers) == [("sha256", "deadbeef"), ("md5", "deadbeef")]


def test_globus_urls_name_an_endpoint_and_a_path() -> None:
    assert parse_globus_url("globus://ep-id/a/b%20c") == ("ep-id", "/a/b c")
    with pytest.raises(transfer.TransferError, match="names no endpoint"):
        parse_globus_url("globus:///a")


def test_retries_are_bounded_and_only_for_transient_errors() -> None:
    calls: list[int] = []
    pauses: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise transfer.TransientTransferError("connection refused")
        return "done"

    assert retrying(flaky, "stage-in", 3, 1.0, pauses.append) == "done"
    assert pauses == [1.0, 2.0]

    def down() -> str:
        raise transfer.TransientTransferError("connection refused")

    with pytest.raises(
        transfer.TransferError, match=r"stage-in: connection refused \(gave up after 3 tries\)"
    ) as err:
        retrying(down, "stage-in", 2, 0.0, pauses.append)
    assert not err.value.transient

    def missing() -> str:
        calls.append(1)
        raise transfer.TransferError("no such file")

    calls.clear()
    with pytest.raises(transfer.TransferError, match=r"^no such file$"):
        retrying(missing, "stage-in", 5, 0.0, pauses.append)
    assert len(calls) == 1


def test_the_transfer_settings_are_validated(tmp_path: Path) -> None:
    (tmp_path / "settings.yml").write_text("transfer:\n  globus_endpoint_id: not-a-uuid\n")
    with pytest.raises(
        ConfigError, match=r"line 2: transfer.globus_endpoint_id: string should match"
    ):
        load_settings(tmp_path)
    (tmp_path / "settings.yml").write_text("transfer:\n  max_retries: -1\n")
    with pytest.raises(ConfigError, match=r"transfer\.max_retries: input should be greater"):
        load_settings(tmp_path)
    (tmp_path / "settings.yml").write_text(
        "transfer:\n  max_retries: 5\n  ssh_options: [-p, '2222']\n"
    )
    assert load_settings(tmp_path).transfer.ssh_options == ["-p", "2222"]
