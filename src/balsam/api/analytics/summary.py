"""The text summary of a :class:`~balsam.api.analytics.report.CampaignReport`
(``balsam report`` prints it and writes it to ``summary.txt``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from balsam.api.analytics.report import CampaignReport


def summary_text(report: CampaignReport) -> str:
    """The report as plain text: the window, jobs per state, throughput, utilization, time in
    state, errors and per-workflow progress (times in local time)."""
    parts = [
        _heading(report),
        _states(report),
        _throughput(report),
        _utilization(report),
        _state_times(report),
        _errors(report),
        _workflows(report),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def format_seconds(seconds: float) -> str:
    """A duration as a person reads it: ``0.25 s``, ``42 s``, ``3 m 20 s``, ``2 h 05 m``."""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} m {int(seconds % 60):02d} s"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} m"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600):02d} h"


def _time(when: datetime | None) -> str:
    return "-" if when is None else when.astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], indent: str = "  ") -> str:
    cells = [list(headers), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        indent + "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def _heading(report: CampaignReport) -> str:
    lines = [
        "Balsam campaign report",
        f"Workflow: {report.workflow or 'all'}",
        f"Since: {_time(report.since) if report.since else 'the first event'}",
    ]
    if report.start is None or report.end is None:
        lines.append("Window: no events")
    else:
        span = (report.end - report.start).total_seconds()
        lines.append(
            f"Window: {_time(report.start)} to {_time(report.end)} ({format_seconds(span)}), "
            f"intervals of {format_seconds(report.interval_seconds)}"
        )
    lines.append(f"Jobs: {report.jobs}; events read: {report.events}; runs: {report.runs}")
    return "\n".join(lines)


def _states(report: CampaignReport) -> str:
    if not report.state_counts:
        return "Jobs per state (now)\n  no jobs"
    rows = [(state, n) for state, n in report.state_counts.items()]
    return "Jobs per state (now)\n" + _table(("STATE", "JOBS"), rows)


def _throughput(report: CampaignReport) -> str:
    rows = report.throughput.rows()
    if not rows:
        return ""
    finished = rows[-1].cumulative_finished
    peak = max(rows, key=lambda r: r.finished)
    hours = max(1e-9, sum((r.end - r.start).total_seconds() for r in rows) / 3600)
    return (
        "Throughput\n"
        f"  jobs finished: {finished} ({finished / hours:.1f} per hour over the window)\n"
        f"  busiest interval: {peak.finished} finished from {_time(peak.start)}"
    )


def _utilization(report: CampaignReport) -> str:
    if report.start is None:
        return ""
    head = (
        f"Node utilization (held nodes from: {report.capacity})\n"
        f"  busy node-hours: {report.busy_node_hours:.3f}; "
        f"held node-hours: {report.held_node_hours:.3f}"
    )
    if report.overall_utilization is None:
        note = (
            "  utilization: n/a (no batch job was recorded running; "
            "give the nodes held with --nodes N)"
        )
    else:
        note = f"  utilization: {100 * report.overall_utilization:.1f}% of held node-hours"
    peak = max((r.running_jobs for r in report.utilization.rows()), default=0.0)
    lines = [head, note, f"  most jobs running (interval average): {peak:.1f}"]
    if report.unseen_batch_jobs:
        lines.append(
            f"  {report.unseen_batch_jobs} batch job(s) ended without being recorded running: "
            "their nodes are not counted"
        )
    return "\n".join(lines)


def _state_times(report: CampaignReport) -> str:
    rows = [
        (
            r.state,
            r.count,
            format_seconds(r.mean_seconds),
            format_seconds(r.median_seconds),
            format_seconds(r.p90_seconds),
        )
        for r in report.state_times.rows()
    ]
    if not rows:
        return ""
    return "Time in state (stays that ended)\n" + _table(
        ("STATE", "STAYS", "MEAN", "MEDIAN", "P90"), rows
    )


def _errors(report: CampaignReport) -> str:
    apps = report.app_errors.rows()
    errors = sum(r.run_errors for r in apps)
    timeouts = sum(r.run_timeouts for r in apps)
    failed = sum(r.failed for r in apps)
    lines = [f"Errors\n  run errors: {errors}; run timeouts: {timeouts}; failed: {failed}"]
    if apps:
        rows = [(r.app, r.run_errors, r.run_timeouts, r.failed) for r in apps]
        lines.append(_table(("APP", "RUN_ERROR", "RUN_TIMEOUT", "FAILED"), rows))
    causes = report.error_causes.rows()
    if causes:
        rows2 = [(r.cause, r.jobs, r.run_errors) for r in causes]
        lines.append(_table(("CAUSE OF RUN ERRORS", "JOBS", "RUN_ERRORS"), rows2))
    return "\n".join(lines)


def _workflows(report: CampaignReport) -> str:
    rows = [
        (
            r.workflow,
            r.total,
            r.finished,
            r.failed,
            r.killed,
            r.running,
            r.waiting,
            f"{100 * r.fraction_done:.1f}%",
        )
        for r in report.workflows.rows()
    ]
    if not rows:
        return ""
    headers = ("WORKFLOW", "JOBS", "FINISHED", "FAILED", "KILLED", "RUNNING", "WAITING", "DONE")
    return "Workflows (now)\n" + _table(headers, rows)
