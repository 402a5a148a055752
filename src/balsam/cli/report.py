"""``balsam report``: the campaign's analytics as plots and a text summary (docs/report.md).

Reads the event log once (page by page, bounded memory) through the Backend, so it works on
SQLite, PostgreSQL and through ``balsam server`` alike. Every option is checked before the
database is read, and nothing is written before the report is computed: bad input changes
nothing. Without matplotlib the text summary is still written, one line on stderr says how
to get the plots, and the exit status is 0 (the summary is the report; plots are extra).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from balsam.api.analytics import CampaignReport, campaign_report, summary_text
from balsam.cli.common import BalsamCommand, active_backend
from balsam.domain.times import parse_duration, parse_since
from balsam.errors import ConfigError, ValidationError

#: Where the files go without ``--out``.
DEFAULT_OUT = "balsam-report"


@click.command("report", cls=BalsamCommand)
@click.option("--wf", "workflow", default=None, help="Only the jobs of this workflow.")
@click.option(
    "--since",
    default=None,
    help="Only what happened from then on: 30m, 2h, 1d before now, or an ISO time.",
)
@click.option(
    "--out",
    "out_dir",
    default=DEFAULT_OUT,
    show_default=True,
    help="Directory for summary.txt and the PNG and SVG plots (made if missing).",
)
@click.option(
    "--interval",
    default=None,
    help="Width of the time bins (e.g. 30s, 5m); default: at most 120 bins over the window.",
)
@click.option(
    "--nodes",
    type=click.IntRange(min=1),
    default=None,
    help="Nodes held throughout (for launchers run outside a recorded batch job).",
)
def report_command(
    workflow: str | None,
    since: str | None,
    out_dir: str,
    interval: str | None,
    nodes: int | None,
) -> None:
    """Throughput, node utilization, time in state, errors, workflow progress.

    Writes summary.txt and throughput, utilization, state_times, errors and workflows as
    .png and .svg into --out, and prints the summary.

    \b
    Examples:
      balsam report
      balsam report --wf sweep --since 2h --out sweep-report
      balsam report --since 2024-05-01T08:00 --interval 10m
    """
    start = _since(since)
    width = _interval(interval)
    out = _out_dir(out_dir)
    with active_backend() as (_site, backend):
        report = campaign_report(
            backend, workflow=workflow, since=start, interval=width, nodes=nodes
        )
    _write(report, out)


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_since(text)
    except ValueError as exc:
        raise ValidationError(f"--since: {exc}") from None


def _interval(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as exc:
        raise ValidationError(f"--interval: {exc}") from None
    if seconds <= 0:
        raise ValidationError(f"--interval: {text!r} is not a positive duration")
    return seconds


def _out_dir(text: str) -> Path:
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out: {text!r} exists and is not a directory")
    return path


def _write(report: CampaignReport, out: Path) -> None:
    from balsam.api.analytics.plots import INSTALL_HINT, plots_available, write_plots

    text = summary_text(report)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.txt").write_text(text)
    except OSError as exc:
        raise ConfigError(f"--out: cannot write to {str(out)!r}: {exc.strerror}") from None
    click.echo(text, nl=False)
    if not plots_available():
        click.echo(f"balsam report: no plots: they need matplotlib ({INSTALL_HINT})", err=True)
        return
    written = write_plots(report, out)
    click.echo(f"\nWrote {out / 'summary.txt'} and {len(written)} plot files to {out}")


COMMANDS: list[click.Command] = [report_command]
