"""Campaign analytics (balsam.api.analytics) on a hand-built event log with known answers.

The in-memory backend takes every time from its clock, which the ``clock`` fixture sets, and
a launcher's updates carry their own times: so each run, stay and batch job below starts and
ends at a chosen second, and every figure is worked out by hand in the comments.
"""

from __future__ import annotations

import importlib
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from balsam.api.analytics import campaign_report, summary_text
from balsam.api.analytics.durations import Durations
from balsam.api.analytics.timeline import Timeline
from balsam.domain.batchjobs import BatchJobState
from balsam.domain.states import JobState
from balsam.domain.times import parse_duration, parse_since
from balsam.errors import ValidationError
from balsam.schemas.apps import AppCreate
from balsam.schemas.batchjobs import BatchJobCreate, BatchJobUpdate
from balsam.schemas.jobs import JobCreate, StateUpdate
from balsam.schemas.queries import JobQuery, clause_from_kwargs
from balsam.schemas.sessions import ClaimRequest
from balsam.testing import MemoryBackend

S = JobState
T0 = datetime(2024, 1, 1, tzinfo=UTC)
CLOCKED = ("memcreate", "memengine", "membatch", "memjobs", "memsessions", "memservice")


class Clock:
    """The memory backend's ``utcnow``, at a chosen second after T0."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> datetime:
        self.now = T0 + timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    found = Clock()
    for name in CLOCKED:
        monkeypatch.setattr(importlib.import_module(f"balsam.testing.{name}"), "utcnow", found)
    return found


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Campaign:
    """Jobs run by a pretend launcher at chosen times."""

    def __init__(self, backend: MemoryBackend, clock: Clock) -> None:
        self.backend, self.clock = backend, clock
        self.session = backend.open_session("test", "node01", 1).id
        self.seq = 0

    def add(self, name: str, app: str = "sim", workflow: str = "w", **fields: object) -> str:
        spec = JobCreate(name=name, application=app, workflow=workflow, **fields)  # type: ignore[arg-type]
        return self.backend.create_jobs([spec])[0].job_id

    def start(self, job_id: str, when: float) -> None:
        self.clock.at(when)
        self.seq += 1
        claimed = self.backend.claim_jobs(
            self.session, ClaimRequest(job_ids=[job_id], claim_seq=self.seq, max_nodes=8)
        )
        assert [j.job_id for j in claimed] == [job_id]
        self.update(job_id, S.RUNNING, when)

    def run(self, job_id: str, start: float, end: float, state: S, code: int | None) -> None:
        self.start(job_id, start)
        self.clock.at(end)
        self.update(job_id, state, end, code)

    def update(self, job_id: str, state: S, when: float, code: int | None = None) -> None:
        self.seq += 1
        upd = StateUpdate(
            job_id=job_id, state=state, timestamp=at(when), return_code=code, seq=self.seq
        )
        (result,) = self.backend.record_updates(self.session, [upd])
        assert result.ok, result.reason


def batch_job(backend: MemoryBackend, clock: Clock, nodes: int, states: list[tuple[float, str]]):  # type: ignore[no-untyped-def]
    spec = BatchJobCreate(
        scheduler="local", project="p", queue="q", num_nodes=nodes, wall_time_minutes=10,
        job_mode="serial",
    )  # fmt: skip
    clock.at(states[0][0])
    row = backend.create_batch_job(spec)
    for when, state in states:
        clock.at(when)
        backend.update_batch_job(row.id, BatchJobUpdate(state=BatchJobState(state)))
    return row


@pytest.fixture
def campaign(clock: Clock) -> Iterator[Campaign]:
    """The schedule every test below reads (seconds after T0; one batch job of 2 nodes held
    from 0 to 100):

    job  app  nodes      run        ends
    A    sim  1          10 - 40    RUN_DONE (-> JOB_FINISHED at 40)
    B    sim  2          40 - 60    RUN_DONE (-> JOB_FINISHED at 60)
    C    bad  1/2 node   10 - 30    RUN_ERROR, exit code 3 (-> FAILED at 30, no retries)
    D    sim  1          70 - 100   RUN_TIMEOUT (-> RESTART_READY at 100)
    E    sim  1          never      (workflow "other")
    """
    backend = MemoryBackend()
    clock.at(0)
    backend.create_app(AppCreate(name="sim", executable="true"))
    backend.create_app(AppCreate(name="bad", executable="false"))
    c = Campaign(backend, clock)
    a, b = c.add("A"), c.add("B", num_nodes=2)
    cj = c.add("C", app="bad", node_packing_count=2)
    d = c.add("D")
    c.add("E", workflow="other")
    batch_job(backend, clock, 2, [(0, "queued"), (0, "running"), (100, "finished")])
    # Never seen running: its nodes cannot count.
    batch_job(backend, clock, 8, [(0, "queued"), (50, "gone")])
    c.run(a, 10, 40, S.RUN_DONE, 0)
    c.run(cj, 10, 30, S.RUN_ERROR, 3)
    c.run(b, 40, 60, S.RUN_DONE, 0)
    clock.at(50)
    backend.note_jobs([a], "a note changes no state")
    c.run(d, 70, 100, S.RUN_TIMEOUT, None)
    yield c


def report_of(c: Campaign, **kwargs: object):  # type: ignore[no-untyped-def]
    return campaign_report(c.backend, now=at(200), page_size=2, **kwargs)  # type: ignore[arg-type]


def test_node_utilization_of_a_known_schedule(campaign: Campaign) -> None:
    report = report_of(campaign, interval=10)
    # Busy node-seconds: A 1x30 + B 2x20 + C 0.5x20 + D 1x30 = 110; held: 2 nodes x 100 s.
    assert report.busy_node_hours == pytest.approx(110 / 3600)
    assert report.held_node_hours == pytest.approx(200 / 3600)
    assert report.overall_utilization == pytest.approx(0.55)
    assert (report.capacity, report.unseen_batch_jobs) == ("batch jobs", 1)
    rows = {int((r.start - T0).total_seconds()): r for r in report.utilization.rows()}
    assert sorted(rows) == list(range(0, 101, 10))
    # 10-20: A (1 node) and C (half a node) run.
    assert (rows[10].running_jobs, rows[10].busy_nodes, rows[10].held_nodes) == (2, 1.5, 2)
    assert rows[10].utilization == pytest.approx(0.75)
    assert rows[40].busy_nodes == 2 and rows[40].utilization == pytest.approx(1.0)
    assert rows[60].running_jobs == 0 and rows[60].utilization == 0
    assert rows[70].utilization == pytest.approx(0.5)
    # The last interval only holds the last event (t=100): nothing is held in it.
    assert rows[100].utilization is None


def test_throughput_errors_and_timeouts_per_interval(campaign: Campaign) -> None:
    report = report_of(campaign, interval=10)
    rows = {int((r.start - T0).total_seconds()): r for r in report.throughput.rows()}
    assert [s for s, r in rows.items() if r.finished] == [40, 60]
    assert rows[60].cumulative_finished == 2 and rows[100].cumulative_finished == 2
    assert (rows[30].run_errors, rows[30].failed) == (1, 1)
    assert rows[100].run_timeouts == 1
    assert report.runs == 4


def test_time_in_each_state(campaign: Campaign) -> None:
    report = report_of(campaign)
    stays = {r.state: r for r in report.state_times.rows()}
    # PREPROCESSED from creation (0) to the run: A 10, B 40, C 10, D 70 (E still waits).
    pre = stays["PREPROCESSED"]
    assert (pre.count, pre.mean_seconds, pre.median_seconds) == (4, 32.5, 25)
    assert pre.p90_seconds == pytest.approx(61)  # 40 + 0.7 x (70 - 40), numpy's linear
    run = stays["RUNNING"]
    assert (run.count, run.mean_seconds, run.median_seconds, run.p90_seconds) == (4, 25, 25, 30)
    assert run.total_seconds == 100
    # Fast-forwarded steps take no time; D's RESTART_READY has not ended.
    assert stays["RUN_DONE"].count == 2 and stays["RUN_DONE"].total_seconds == 0
    assert "RESTART_READY" not in stays


def test_error_histograms_by_app_and_cause(campaign: Campaign) -> None:
    report = report_of(campaign)
    apps = {r.app: (r.run_errors, r.run_timeouts, r.failed) for r in report.app_errors.rows()}
    assert apps == {"bad": (1, 0, 1), "sim": (0, 1, 0)}
    causes = [(r.cause, r.jobs, r.run_errors) for r in report.error_causes.rows()]
    assert causes == [("exit code 3", 1, 1)]


def test_workflow_progress_and_state_counts(campaign: Campaign) -> None:
    report = report_of(campaign)
    assert report.state_counts == {
        "PREPROCESSED": 1, "JOB_FINISHED": 2, "RESTART_READY": 1, "FAILED": 1
    }  # fmt: skip
    rows = {r.workflow: r for r in report.workflows.rows()}
    w = rows["w"]
    assert (w.total, w.finished, w.failed, w.killed, w.running, w.waiting) == (4, 2, 1, 0, 0, 1)
    assert w.fraction_done == 0.5
    assert rows["other"].fraction_done == 0 and rows["other"].waiting == 1
    tidy = {(r.workflow, r.state): r.count for r in report.workflow_states.rows()}
    assert tidy[("w", "JOB_FINISHED")] == 2 and tidy[("other", "PREPROCESSED")] == 1


def test_since_keeps_what_happened_from_then_on(campaign: Campaign) -> None:
    report = report_of(campaign, since=at(50), interval=10)
    assert report.start == at(50) and report.end == at(100)
    # B from 50 (clipped) to 60 on 2 nodes, D 70-100 on 1; held 2 nodes x 50 s.
    assert report.busy_node_hours == pytest.approx(50 / 3600)
    assert report.overall_utilization == pytest.approx(0.5)
    assert sum(r.finished for r in report.throughput.rows()) == 1
    stays = {r.state: r.count for r in report.state_times.rows()}
    assert stays["RUNNING"] == 2 and stays["PREPROCESSED"] == 1  # D's, ended at 70
    assert [r.app for r in report.app_errors.rows()] == ["sim"]
    assert report.state_counts["FAILED"] == 1, "counts are where jobs stand now"


def test_workflow_filter(campaign: Campaign) -> None:
    report = report_of(campaign, workflow="other")
    assert report.jobs == 1 and report.runs == 0 and report.busy_node_hours == 0
    assert [r.workflow for r in report.workflows.rows()] == ["other"]


def test_runs_still_going_count_until_now_and_fixed_nodes(campaign: Campaign) -> None:
    (e,) = campaign.backend.query_jobs(JobQuery(clauses=[clause_from_kwargs({"name": "E"})]))
    campaign.start(e.job_id, 150)
    report = report_of(campaign, nodes=4)
    assert report.end == at(200) and report.runs == 5
    # 110 node-seconds as before, plus E's 50 s so far; 4 nodes held from 0 to 200.
    assert report.busy_node_hours == pytest.approx(160 / 3600)
    assert report.overall_utilization == pytest.approx(160 / 800)
    assert report.capacity == "4 nodes (given)"
    assert report.workflows.rows()[0].running == 1


def test_without_batch_jobs_utilization_is_unknown(clock: Clock) -> None:
    backend = MemoryBackend()
    backend.create_app(AppCreate(name="sim", executable="true"))
    c = Campaign(backend, clock)
    c.run(c.add("A"), 5, 15, S.RUN_DONE, 0)
    report = campaign_report(backend, now=at(100))
    assert report.capacity == "none recorded" and report.overall_utilization is None
    assert report.busy_node_hours == pytest.approx(10 / 3600)
    assert all(r.utilization is None for r in report.utilization.rows())
    text = summary_text(report)
    assert "utilization: n/a" in text and "--nodes N" in text


def test_an_empty_database() -> None:
    report = campaign_report(MemoryBackend())
    assert (report.jobs, report.start, report.overall_utilization) == (0, None, None)
    assert all(len(t) == 0 for t in report.tables().values())
    assert "no jobs" in summary_text(report)


def test_bad_arguments_are_validation_errors(campaign: Campaign) -> None:
    with pytest.raises(ValidationError, match="positive"):
        report_of(campaign, interval=0)
    with pytest.raises(ValidationError, match="positive"):
        report_of(campaign, nodes=0)
    with pytest.raises(ValidationError, match="interval too short"):
        report_of(campaign, interval=0.001)


def test_summary_text_names_the_figures(campaign: Campaign) -> None:
    text = summary_text(report_of(campaign))
    assert re.search(r"^  JOB_FINISHED +2$", text, re.M) and re.search(r"^  FAILED +1$", text, re.M)
    assert "utilization: 55.0% of held node-hours" in text
    assert "exit code 3" in text
    assert "1 batch job(s) ended without being recorded running" in text


def test_tables_as_rows_dicts_and_dataframes(campaign: Campaign) -> None:
    report = report_of(campaign)
    table = report.state_times
    assert table.columns()[:2] == ["state", "count"]
    assert table.as_dicts()[0]["state"] == table.rows()[0].state
    pandas = pytest.importorskip("pandas")
    frame = table.to_dataframe()
    assert isinstance(frame, pandas.DataFrame) and list(frame.columns) == table.columns()
    assert len(frame) == len(table)


def test_to_dataframe_without_pandas_says_what_to_install(
    campaign: Campaign, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(ImportError, match="pip install pandas"):
        report_of(campaign).throughput.to_dataframe()


# ---- the parts ------------------------------------------------------------------------------


def test_timeline_integrals_survive_widening_exactly() -> None:
    """Random intervals fed out of order: each bin's integral equals the brute-force one."""
    rng = random.Random(7)
    spans = []
    for _ in range(300):
        start = rng.uniform(0, 5000)
        spans.append((start, start + rng.uniform(0, 800), rng.choice([0.5, 1, 2])))
    line = Timeline((), ("busy",), max_bins=50)
    for s0, e0, w0 in spans:
        line.interval("busy", s0, e0, w0)
    bins = line.bins(0, max(e for _, e, _ in spans))
    assert line.width == 300 and len(bins) <= 50
    for b in bins:
        expected = sum(w * max(0.0, min(e, b.end) - max(s, b.start)) for s, e, w in spans)
        assert b.integrals["busy"] == pytest.approx(expected, abs=1e-6)


def test_timeline_counts_and_fixed_width() -> None:
    line = Timeline(("done",), (), width=10)
    for t in (1, 9, 10, 35):
        line.count("done", t)
    assert [b.counts["done"] for b in line.bins(0, 35)] == [2, 1, 0, 1]
    tight = Timeline(("done",), (), max_bins=5, width=1)
    tight.count("done", 0)
    with pytest.raises(ValueError, match="more than"):
        tight.count("done", 10)


def test_durations_exact_then_within_one_percent() -> None:
    small = Durations()
    for v in (1, 2, 3, 4):
        small.add(v)
    stats = small.stats()
    assert stats is not None and (stats.median, stats.p90) == (2.5, pytest.approx(3.7))
    rng = random.Random(3)
    values = [rng.expovariate(1 / 60) for _ in range(30_000)]
    big = Durations(exact_limit=1000)
    for v in values:
        big.add(v)
    got = big.stats()
    assert got is not None and got.count == 30_000
    ordered = sorted(values)
    assert got.mean == pytest.approx(sum(values) / len(values))
    assert got.median == pytest.approx(ordered[15_000], rel=0.011)
    assert got.p90 == pytest.approx(ordered[27_000], rel=0.011)
    assert Durations().stats() is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("2h", 7200), ("1d", 86400), ("90s", 90), ("1h30m", 5400), ("1.5h", 5400)],
)
def test_durations_as_typed(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds
    assert parse_since(text, now=at(10_000)) == at(10_000 - seconds)


def test_since_as_an_iso_time_and_bad_input() -> None:
    assert parse_since("2024-01-01T00:00:10Z") == at(10)
    assert parse_since("2024-01-01T01:00:10+01:00") == at(10)
    for bad in ("", "2", "yesterday", "2h later", "-1h", "2024-13-01"):
        with pytest.raises(ValueError, match="neither a duration"):
            parse_since(bad)


def test_plots_are_written_as_png_and_svg(campaign: Campaign, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from balsam.api.analytics.plots import PLOTS, write_plots

    for report, out in (
        (report_of(campaign), tmp_path / "a"),
        (campaign_report(MemoryBackend()), tmp_path / "empty"),
    ):
        out.mkdir()
        written = write_plots(report, out)
        assert sorted(p.name for p in written) == sorted(
            f"{n}.{s}" for n in PLOTS for s in ("png", "svg")
        )
        for path in written:
            head = path.read_bytes()[:8]
            assert head == b"\x89PNG\r\n\x1a\n" if path.suffix == ".png" else b"<?xml" in head
