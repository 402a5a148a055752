"""``balsam report`` after a real campaign run by a real launcher, on SQLite and PostgreSQL.

Some jobs succeed, two fail (exit code 3, no retries) and one is stopped at the launcher's
time limit (RUN_TIMEOUT, no retries: FAILED). The report's files must be valid images and its
summary's numbers what the database says.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from balsam.backends.base import Backend
from balsam.config import Site
from balsam.domain.states import JobState
from balsam.schemas.queries import JobQuery, clause_from_kwargs
from launchkit import BALSAM, add_app, add_jobs, cli, launch, settings

S = JobState
PLOTS = {
    "throughput": "Throughput",
    "utilization": "Node utilization",
    "state_times": "Time in each state",
    "errors": "Errors and timeouts",
    "workflows": "Workflow progress",
}


def run_campaign(site: Site, backend: Backend) -> None:
    settings(site, launcher={"kill_grace_seconds": 1.0})
    add_app(backend, "ok", "sleep 0.2")
    add_app(backend, "bad", "sh -c 'exit 3'")
    add_app(backend, "slow", "sleep 60")
    # No wall time asked (0): each fits the launcher's short time limit.
    quick = {"wall_time_minutes": 0}
    oks = (
        {**quick, "name": f"ok{i}", "workflow": "good", "node_packing_count": 4} for i in range(6)
    )
    add_jobs(backend, "ok", *oks)
    bad = {**quick, "workflow": "mixed", "max_error_retries": 0}
    add_jobs(backend, "bad", {**bad, "name": "bad0"}, {**bad, "name": "bad1"})
    add_jobs(
        backend, "slow", {**quick, "name": "slow", "workflow": "mixed", "max_timeout_retries": 0}
    )
    done = launch("--consume-all", "--job-mode", "serial", "--time-limit-minutes", "0.1")
    assert done.returncode == 0, done.stderr
    assert backend.count_by_state(JobQuery()) == {"JOB_FINISHED": 6, "FAILED": 3}


def report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BALSAM, "report", *args], capture_output=True, text=True, timeout=120, check=False
    )


def section(text: str, title: str) -> list[list[str]]:
    """The rows under ``title`` (header row dropped), split on runs of spaces."""
    block = text[text.index(title) :].split("\n\n")[0].splitlines()[2:]
    return [re.split(r"\s{2,}", line.strip()) for line in block]


def test_report_of_a_real_campaign(site: Site, backend_of: Backend, tmp_path: Path) -> None:
    run_campaign(site, backend_of)
    out = tmp_path / "report"
    done = report("--out", str(out), "--nodes", "1")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    for name, title in PLOTS.items():
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        svg = ET.parse(out / f"{name}.svg").getroot()
        assert svg.tag == "{http://www.w3.org/2000/svg}svg"
        texts = " ".join(t for t in svg.itertext())
        assert title in texts, f"{name}.svg has no title {title!r}"
    summary = (out / "summary.txt").read_text()
    assert summary in done.stdout

    states = {state: int(n) for state, n in section(summary, "Jobs per state")}
    assert states == backend_of.count_by_state(JobQuery())
    for row in section(summary, "Workflows (now)"):
        wf, total, finished, failed = row[0], *map(int, row[1:4])
        counts = backend_of.count_by_state(JobQuery(clauses=[clause_from_kwargs({"workflow": wf})]))
        assert total == sum(counts.values())
        assert (finished, failed) == (counts.get("JOB_FINISHED", 0), counts.get("FAILED", 0))
    assert {row[0] for row in section(summary, "Workflows (now)")} == {"good", "mixed"}
    assert "run errors: 2; run timeouts: 1; failed: 3" in summary
    assert re.search(r"^  exit code 3 +2 +2$", summary, re.M)
    assert re.search(r"^  RUNNING +9 ", summary, re.M), "nine runs, each one stay in RUNNING"
    assert "held nodes from: 1 nodes (given)" in summary

    mixed = report("--wf", "mixed", "--since", "1h", "--interval", "1s", "--out", str(out / "m"))
    assert mixed.returncode == 0, mixed.stderr
    text = (out / "m" / "summary.txt").read_text()
    assert "Workflow: mixed" in text and "Jobs: 3;" in text
    assert "intervals of 1.00 s" in text and "utilization: n/a" in text


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--since", "yesterday"], "--since: 'yesterday' is neither a duration"),
        (["--interval", "0s"], "--interval: '0s' is not a positive duration"),
        (["--interval", "5"], "--interval: '5' is not a duration"),
        (["--nodes", "0"], "--nodes"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    site: Site, tmp_path: Path, args: list[str], says: str
) -> None:
    out = tmp_path / "never"
    done = report(*args, "--out", str(out))
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr
    assert not out.exists()


def test_an_out_path_that_is_a_file_is_refused(site: Site, tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("mine")
    done = report("--out", str(target))
    assert done.returncode != 0 and "is not a directory" in done.stderr
    assert target.read_text() == "mine"


def test_without_matplotlib_the_summary_is_still_written(
    site: Site, backend_of: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    add_app(backend_of, "ok", "true")
    add_jobs(backend_of, "ok", {"name": "one"})
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, out, err = cli(capsys, "report", "--out", str(tmp_path / "r"))
    assert code == 0 and "Jobs per state" in out
    assert err.strip().splitlines() == [
        "balsam report: no plots: they need matplotlib (pip install 'balsam[plot]')"
    ]
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["summary.txt"]
