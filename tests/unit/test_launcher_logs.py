"""The launcher's log file: per-job lines written directly keep logging's layout."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from balsam.launcher import logs

JOB_ID = "0123abcd-0000-0000-0000-000000000000"
#: FORMAT as logging renders it: "2026-12-01 20:53:13,123 host:pid LEVEL [job] name: text".
LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} node7:\d+ (?P<level>[A-Z]+) "
    r"\[(?P<job>[^\]]+)\] (?P<name>[\w.]+): (?P<text>.*)$"
)


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = logs.configure(tmp_path, "node7")
    yield path
    logs.close(path)


def lines_of(path: Path) -> list[re.Match[str]]:
    logs.flush(0.0, force=True)
    found = [LINE.match(line) for line in path.read_text().splitlines()]
    assert all(found), path.read_text()
    return [m for m in found if m is not None]


def test_job_lines_and_logging_lines_share_one_layout(log_file: Path) -> None:
    logger = logging.getLogger("balsam.launcher.jobflow")
    logger.info("through logging", extra=logs.job_extra(JOB_ID))
    logs.JobLines("balsam.launcher.jobflow").info(JOB_ID, "-> RUNNING attempt 1 on node7")
    first, second = lines_of(log_file)
    assert first["level"] == second["level"] == "INFO"
    assert first["job"] == second["job"] == "0123abcd"
    assert first["name"] == second["name"] == "balsam.launcher.jobflow"
    assert second["text"] == "-> RUNNING attempt 1 on node7"


def test_job_lines_follow_the_logger_level(log_file: Path) -> None:
    logger = logging.getLogger("balsam")
    logger.setLevel(logging.WARNING)
    try:
        logs.JobLines("balsam.launcher.jobflow").info(JOB_ID, "quiet")
    finally:
        logger.setLevel(logging.INFO)
    logs.JobLines("balsam.launcher.jobflow").info(JOB_ID, "heard")
    assert [m["text"] for m in lines_of(log_file)] == ["heard"]


def test_without_a_launcher_log_job_lines_go_through_logging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="balsam"):
        logs.JobLines("balsam.launcher.jobflow").info(JOB_ID, "-> RUN_DONE")
    assert [(r.name, r.getMessage(), getattr(r, "job", "")) for r in caplog.records] == [
        ("balsam.launcher.jobflow", "-> RUN_DONE", "0123abcd")
    ]


def test_a_log_that_cannot_be_written_is_counted_and_the_launcher_carries_on(
    log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Writes to /dev/full fail with ENOSPC, as on a full disk: nothing is raised, one
    warning reaches stderr, and once the file can be written again it says how many lines
    were lost."""
    handler = next(
        h for h in logging.getLogger("balsam").handlers if isinstance(h, logs.BufferedFileHandler)
    )
    good = handler.setStream(open("/dev/full", "a", encoding="utf-8"))  # noqa: SIM115
    assert good is not None
    lines = logs.JobLines("balsam.launcher.jobflow")
    for i in range(2000):  # more than a buffer: the job lines' own writes fail too
        lines.info(JOB_ID, f"-> RUNNING attempt {i}")
    logging.getLogger("balsam.launcher.jobflow").warning("a warning is written at once")
    logs.flush(0.0, force=True)
    assert handler.failing_since is not None and handler.lost_lines > 0
    err = capsys.readouterr().err
    assert err.count("cannot write the launcher log") == 1
    full = handler.setStream(good)
    assert full is not None
    with contextlib.suppress(OSError):
        full.close()  # what it still buffered for /dev/full is gone with it
    logs.flush(0.0, force=True)
    texts = [m["text"] for m in lines_of(log_file)]
    assert any(
        re.fullmatch(r"the log could not be written from .*: \d+ line\(s\) lost", t) for t in texts
    ), texts
    assert handler.failing_since is None
