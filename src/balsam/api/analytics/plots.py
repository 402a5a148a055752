"""Plots of a campaign report, as PNG and SVG files (matplotlib, ``pip install 'balsam[plot]'``).

matplotlib is imported only when plots are drawn, and figures are drawn on the Agg canvas
(never pyplot), so a login node without a display and a notebook with its own backend both
work, and ``balsam report`` starts quickly. SVG text stays text (``svg.fonttype: none``):
the files are small and their titles searchable.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from balsam.api.analytics.report import CampaignReport
from balsam.api.analytics.summary import format_seconds

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: What to install for plots.
INSTALL_HINT = "pip install 'balsam[plot]'"
#: Figure size in inches and PNG resolution: 800 x 450 pixels, a few tens of KB each.
SIZE = (8.0, 4.5)
DPI = 100
#: At most this many workflows or apps are drawn (the largest); the title says how many more.
MOST_BARS = 25
#: Colours per outcome, the same in every plot.
COLOURS = {
    "finished": "#2e7d32",
    "running": "#1565c0",
    "waiting": "#9e9e9e",
    "failed": "#c62828",
    "killed": "#6a1b9a",
    "run_errors": "#ef6c00",
    "run_timeouts": "#f9a825",
    "held": "#455a64",
}


def plots_available() -> bool:
    """Whether matplotlib can be imported (imported now: plots are drawn next anyway)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_plots(report: CampaignReport, out_dir: Path) -> list[Path]:
    """Draw every plot of ``report`` into ``out_dir`` as NAME.png and NAME.svg; returns the
    files written. ImportError naming :data:`INSTALL_HINT` without matplotlib."""
    if not plots_available():
        raise ImportError(f"plots need matplotlib: {INSTALL_HINT}")
    import matplotlib

    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "balsam"})
    written = []
    for name, draw in PLOTS.items():
        figure = _figure()
        title = draw(figure, report)
        figure.suptitle(title)
        for suffix in ("png", "svg"):
            path = out_dir / f"{name}.{suffix}"
            # No date in the metadata: the same report gives the same bytes.
            meta = {"Title": title, "Date": None} if suffix == "svg" else {"Title": title}
            figure.savefig(path, format=suffix, dpi=DPI, metadata=meta)
            written.append(path)
    return written


def _figure() -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZE, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _x(when: datetime) -> float:
    """A time as matplotlib's date number: days since its epoch, 1970-01-01 UTC (what
    ``matplotlib.dates.date2num`` gives, which has no type hints)."""
    return when.timestamp() / 86400


def _time_axis(axes: object) -> None:
    import matplotlib.dates as mdates
    from matplotlib.axes import Axes

    assert isinstance(axes, Axes)
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    axes.set_xlabel("time (UTC)")


def _empty(figure: Figure, what: str) -> None:
    axes = figure.add_subplot()
    axes.text(0.5, 0.5, what, ha="center", va="center", transform=axes.transAxes)
    axes.set_axis_off()


def _scope(report: CampaignReport) -> str:
    return f"workflow {report.workflow}" if report.workflow else "all workflows"


def draw_throughput(figure: Figure, report: CampaignReport) -> str:
    """Jobs finished, run errors and timeouts per interval (bars), cumulative finished (line)."""
    rows = report.throughput.rows()
    title = f"Throughput ({_scope(report)})"
    if not rows:
        _empty(figure, "no events in the window")
        return title
    from matplotlib.ticker import MaxNLocator

    axes = figure.add_subplot()
    starts = [_x(r.start) for r in rows]
    width = report.interval_seconds / 86400  # in days, matplotlib's date unit
    bottom = [0.0] * len(rows)
    for series, label in (
        ("finished", "finished"),
        ("run_errors", "run errors"),
        ("run_timeouts", "run timeouts"),
    ):
        heights = [float(getattr(r, series)) for r in rows]
        axes.bar(
            starts, heights, width=width, bottom=bottom, align="edge",
            color=COLOURS[series], label=label,
        )  # fmt: skip
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axes.set_ylabel(f"jobs per {format_seconds(report.interval_seconds)}")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    total = axes.twinx()
    # The cumulative count as of each interval's end.
    total.plot(
        [starts[0], *(_x(r.end) for r in rows)],
        [0, *(r.cumulative_finished for r in rows)],
        color="black", label="finished, cumulative",
    )  # fmt: skip
    total.set_ylabel("jobs finished, cumulative")
    total.set_ylim(bottom=0)
    total.yaxis.set_major_locator(MaxNLocator(integer=True))
    _time_axis(axes)
    handles, labels = axes.get_legend_handles_labels()
    more, more_labels = total.get_legend_handles_labels()
    axes.legend(handles + more, labels + more_labels, loc="upper left", fontsize="small")
    return title


def draw_utilization(figure: Figure, report: CampaignReport) -> str:
    """Busy and held nodes over time (top), their ratio in percent (bottom)."""
    rows = report.utilization.rows()
    overall = report.overall_utilization
    share = "n/a" if overall is None else f"{100 * overall:.1f}%"
    title = f"Node utilization ({_scope(report)}; overall {share})"
    if not rows:
        _empty(figure, "no events in the window")
        return title
    nodes, ratio = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    starts = [_x(r.start) for r in rows] + [_x(rows[-1].end)]

    def steps(values: list[float]) -> list[float]:
        return [*values, values[-1]]

    held = steps([r.held_nodes for r in rows])
    busy = steps([r.busy_nodes for r in rows])
    nodes.step(
        starts, held, where="post", color=COLOURS["held"], label=f"held ({report.capacity})",
        zorder=3,
    )  # fmt: skip
    nodes.fill_between(
        starts, busy, step="post", color=COLOURS["running"], alpha=0.6, label="busy (running jobs)"
    )
    nodes.set_ylabel("nodes (interval average)")
    nodes.set_ylim(bottom=0)
    nodes.legend(loc="upper right", fontsize="small")
    percent = [float("nan") if r.utilization is None else 100 * r.utilization for r in rows]
    ratio.step(starts, steps(percent), where="post", color="black")
    ratio.set_ylabel("busy / held (%)")
    known = [p for p in percent if p == p]  # NaN != NaN: intervals without held nodes
    # Above 100%: a batch job's running state recorded after its launcher started (the poll's
    # lag); clipped here, the table keeps the value.
    ratio.set_ylim(0, 110)
    if not known:
        ratio.text(
            0.5, 0.5, "no batch job recorded running (balsam report --nodes N)",
            ha="center", va="center", transform=ratio.transAxes,
        )  # fmt: skip
    _time_axis(ratio)
    return title


def draw_state_times(figure: Figure, report: CampaignReport) -> str:
    """Median and 90th percentile of the time spent in each state (log scale)."""
    rows = [r for r in report.state_times.rows() if r.p90_seconds > 0]
    title = f"Time in each state ({_scope(report)})"
    if not rows:
        _empty(figure, "no state took measurable time")
        return title
    axes = figure.add_subplot()
    places = list(range(len(rows)))
    axes.barh([p + 0.2 for p in places], [r.median_seconds for r in rows], height=0.4,
              color=COLOURS["running"], label="median")  # fmt: skip
    axes.barh([p - 0.2 for p in places], [r.p90_seconds for r in rows], height=0.4,
              color=COLOURS["held"], label="90th percentile")  # fmt: skip
    axes.set_yticks(places, [f"{r.state} ({r.count})" for r in rows])
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.set_xlabel("seconds in the state (log scale); stays counted in brackets")
    axes.legend(loc="lower right", fontsize="small")
    return title


def draw_errors(figure: Figure, report: CampaignReport) -> str:
    """Run errors, timeouts and failures per app (left), run errors by cause (right)."""
    apps = report.app_errors.rows()[:MOST_BARS]
    causes = report.error_causes.rows()[:MOST_BARS]
    title = f"Errors and timeouts ({_scope(report)})"
    if not apps:
        _empty(figure, "no run errors, timeouts or failures")
        return title
    from matplotlib.ticker import MaxNLocator

    by_app, by_cause = figure.subplots(1, 2)
    places = list(range(len(apps)))
    left = [0.0] * len(apps)
    for series, label in (
        ("run_errors", "RUN_ERROR"), ("run_timeouts", "RUN_TIMEOUT"), ("failed", "FAILED")
    ):  # fmt: skip
        widths = [float(getattr(r, series)) for r in apps]
        colour = COLOURS["failed" if series == "failed" else series]
        by_app.barh(places, widths, left=left, color=colour, label=label)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    by_app.set_yticks(places, [r.app for r in apps])
    by_app.invert_yaxis()
    by_app.set_xlabel("entries into the state")
    by_app.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_app.set_title("by app", fontsize="medium")
    by_app.legend(loc="lower right", fontsize="small")
    if causes:
        spots = list(range(len(causes)))
        by_cause.barh(spots, [r.jobs for r in causes], color=COLOURS["run_errors"])
        by_cause.set_yticks(spots, [r.cause for r in causes])
        by_cause.invert_yaxis()
        by_cause.set_xlabel("jobs with run errors")
        by_cause.xaxis.set_major_locator(MaxNLocator(integer=True))
        by_cause.set_title("run errors by the last run's exit", fontsize="medium")
    else:
        by_cause.set_axis_off()
    return title


def draw_workflows(figure: Figure, report: CampaignReport) -> str:
    """Each workflow's jobs by where they stand, as fractions of its jobs."""
    rows = sorted(report.workflows.rows(), key=lambda r: -r.total)
    more = len(rows) - MOST_BARS
    rows = rows[:MOST_BARS]
    title = "Workflow progress" + (f" (largest {MOST_BARS}; {more} more)" if more > 0 else "")
    if not rows:
        _empty(figure, "no jobs")
        return title
    axes = figure.add_subplot()
    places = list(range(len(rows)))
    left = [0.0] * len(rows)
    for part in ("finished", "running", "waiting", "failed", "killed"):
        widths = [100 * getattr(r, part) / r.total for r in rows]
        axes.barh(places, widths, left=left, color=COLOURS[part], label=part)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    axes.set_yticks(places, [f"{r.workflow} ({r.total})" for r in rows])
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_xlabel("jobs (% of the workflow's jobs, now); job counts in brackets")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=5, fontsize="small")
    return title


#: Each plot's file name and how it is drawn (returns the title).
PLOTS: dict[str, Callable[[Figure, CampaignReport], str]] = {
    "throughput": draw_throughput,
    "utilization": draw_utilization,
    "state_times": draw_state_times,
    "errors": draw_errors,
    "workflows": draw_workflows,
}
