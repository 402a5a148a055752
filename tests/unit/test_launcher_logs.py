"""The launcher's log file: per-job lines written directly keep logging's layout."""

from __future__ import annotations

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
