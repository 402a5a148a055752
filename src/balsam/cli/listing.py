"""``balsam ls`` (jobs, apps, workflows) and ``balsam log``: look at the workflow database.

Output is only the table (or tree), so ``watch balsam ls`` shows a steady screen. Job ids are
shown by their first 8 characters (more when two listed jobs share them); ``--verbose`` shows
full ids and every field.

Balsam 0.5's environment variables are read: ``BALSAM_LS_FIELDS`` (job fields to add as
columns, separated by ``:`` as in 0.5, or by commas) and ``BALSAM_LS_LIMIT`` (list at most
this many jobs, then say how many more there are). ``--id`` matches any part of a job id and
``--wf`` a workflow as :func:`balsam.cli.common.select_workflows` says.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.text import Text
from rich.tree import Tree

from balsam.backends.base import Backend
from balsam.backends.stream import change_waiter
from balsam.cli.common import (
    BalsamCommand,
    client_backend,
    format_time,
    format_value,
    id_width,
    job_query,
    make_table,
    print_rows,
    select_workflows,
    show,
    workflow_names,
)
from balsam.cli.queues import list_queues
from balsam.config import load_site
from balsam.domain.functions import outcome_summary, raised
from balsam.domain.states import JobState, parse_state
from balsam.errors import NotFound, ValidationError
from balsam.schemas.jobs import JobOut
from balsam.schemas.queries import JobQuery, clause_from_kwargs, cursor_after

#: ``ls --watch``: the longest wait between redraws unless --interval says, and the shortest.
WATCH_INTERVAL = 2.0
WATCH_MIN_GAP = 0.25
JOB_COLUMNS = ("ID", "NAME", "WORKFLOW", "APPLICATION", "STATE")
#: The job fields behind :data:`JOB_COLUMNS` (never added twice by BALSAM_LS_FIELDS).
JOB_COLUMN_FIELDS = ("job_id", "name", "workflow", "application", "state")


@click.command("ls", cls=BalsamCommand)
@click.argument(
    "objects",
    type=click.Choice(["jobs", "apps", "wf", "queues"]),
    default="jobs",
    required=False,
)
@click.option("--name", help="Only names containing this text (case-insensitive).")
@click.option("--id", "id_prefix", help="Only the job(s) whose id contains this.")
@click.option("--state", help="Only jobs in this state (or comma-separated states).")
@click.option("--wf", help="Only jobs of this workflow (else of those containing it).")
@click.option("--by-states", is_flag=True, help="Count jobs per state.")
@click.option("--history", is_flag=True, help="State history of each job, with messages.")
@click.option("--verbose", "-v", is_flag=True, help="Every field, full ids.")
@click.option("--tree", is_flag=True, help="Jobs with their children as a tree.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="List at most this many jobs (a page) [default: BALSAM_LS_LIMIT, else all].",
)
@click.option(
    "--after",
    metavar="CURSOR",
    help="The page after the one that printed this cursor (as fast however deep).",
)
@click.option(
    "--watch",
    is_flag=True,
    help="Keep listing: redraw when jobs change (at least every --interval s); Ctrl-C stops.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.5, max=3600),
    default=None,
    help="With --watch: the longest wait between two redraws [default: 2].",
)
def ls_command(objects: str, **opts: Any) -> None:
    """List jobs (default), apps, workflows (wf) or launcher batch jobs (queues).

    \b
    Examples:
      watch balsam ls
      balsam ls --wf test --state RUN_ERROR --history
      balsam ls --by-states --watch
      balsam ls wf
      balsam ls queues
    """
    views = [v for v in ("by_states", "history", "tree") if opts[v]]
    if len(views) > 1:
        raise ValidationError("choose one of --by-states, --history, --tree")
    if objects != "jobs":
        _refuse_job_flags(objects, opts)
    if opts["interval"] is not None and not opts["watch"]:
        raise ValidationError("--interval applies only with --watch")
    with client_backend() as (_site, backend):
        if opts["watch"]:
            watch(
                backend,
                lambda: _list_jobs(backend, opts, views[0] if views else ""),
                opts["interval"] or WATCH_INTERVAL,
            )
        elif objects == "apps":
            _list_apps(backend, opts["name"], opts["verbose"])
        elif objects == "wf":
            _list_workflows(backend, opts["name"], opts["wf"])
        elif objects == "queues":
            list_queues(backend)
        else:
            _list_jobs(backend, opts, views[0] if views else "")


def watch(backend: Backend, draw: Callable[[], None], interval: float) -> None:
    """Draw, then draw again whenever the database's jobs change (woken by the change signal:
    NOTIFY on PostgreSQL, a cheap marker read on SQLite; through a server, its event stream)
    or ``interval`` s pass; until Ctrl-C.

    On a terminal each frame replaces the last; piped, frames follow each other, each under a
    line with its time, so a log of the output reads as a record of the campaign.
    """
    tty = sys.stdout.isatty()
    waiter = change_waiter(backend)
    last = 0.0
    try:
        while True:
            # At most WATCH_MIN_GAP between frames: a burst of changes is one redraw.
            pause = last + WATCH_MIN_GAP - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            last = time.monotonic()
            if tty:
                click.clear()
            stamp = datetime.now().strftime("%H:%M:%S")
            click.echo(f"── balsam ls at {stamp} (redraws on change, Ctrl-C stops)")
            draw()
            sys.stdout.flush()
            waiter.wait(interval)
    except KeyboardInterrupt:
        click.echo("")
    finally:
        waiter.close()


def _refuse_job_flags(objects: str, opts: dict[str, Any]) -> None:
    allowed = {"apps": {"name", "verbose"}, "wf": {"name", "wf"}, "queues": set()}[objects]
    for key, value in opts.items():
        if value and key not in allowed:
            flag = "--" + key.replace("_prefix", "").replace("_", "-")
            raise ValidationError(f"{flag} does not apply to 'balsam ls {objects}'")


def job_conditions(
    name: str | None, id_prefix: str | None, state: str | None, wf: str | None
) -> dict[str, Any]:
    """Query conditions for ``ls`` filters (name substring, id prefix, states, workflow)."""
    conditions: dict[str, Any] = {}
    if name:
        conditions["name__icontains"] = name
    if id_prefix:
        conditions["job_id__startswith"] = id_prefix.strip().lower()
    if wf:
        conditions["workflow"] = wf
    if state:
        try:
            states = [parse_state(s) for s in state.split(",") if s.strip()]
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        conditions["state__in"] = [s.value for s in states]
    return conditions


def _list_jobs(backend: Backend, opts: dict[str, Any], view: str) -> None:
    conditions = job_conditions(opts["name"], None, opts["state"], None)
    if opts["id_prefix"]:
        # Any part of the id, as Balsam 0.5 matched it (a prefix is one such part).
        part = opts["id_prefix"].strip().lower()
        _require_id_part(backend, part)
        conditions["job_id__contains"] = part
    if opts["wf"]:
        conditions["workflow__in"] = select_workflows(backend, opts["wf"], ignore_case=True)
    query = job_query(**conditions)
    if view == "by_states":
        show(_state_counts(backend.count_by_state(query)))
        return
    fields = extra_fields(os.environ.get("BALSAM_LS_FIELDS", ""))
    limit = opts["limit"] or ls_limit(os.environ.get("BALSAM_LS_LIMIT", ""))
    jobs = backend.query_jobs(query.model_copy(update={"limit": limit, "after": opts["after"]}))
    width = 36 if opts["verbose"] else id_width(j.job_id for j in jobs)
    if view == "history":
        for job in jobs:
            show(_history_table(backend, job, width))
    elif view == "tree":
        show(_job_tree(backend, jobs, width))
    elif opts["verbose"]:
        for job in jobs:
            show(_job_fields_table(job))
    else:
        print_rows(
            (*JOB_COLUMNS, *(f.upper() for f in fields)),
            (_job_row(j, width, fields) for j in jobs),
        )
    if limit is not None and len(jobs) == limit:
        why = f"--limit {limit}" if opts["limit"] else f"BALSAM_LS_LIMIT is {limit}"
        _next_page_hint(backend, query, jobs, why, opts["after"] is not None)


def _next_page_hint(
    backend: Backend, query: JobQuery, page: list[JobOut], why: str, paged: bool
) -> None:
    """Say that more jobs match than a full page shows (Balsam 0.5's line), and the cursor
    of the next page."""
    cursor = cursor_after(query, page[-1])
    if paged:  # a count would read every match, and tell nothing about what is left
        click.echo(f"(the next page: --after {cursor})")
        return
    hidden = backend.count_jobs(query) - len(page)
    if hidden > 0:
        click.echo(f"({hidden} more job(s) not shown: {why}; the next page: --after {cursor})")


def _job_row(job: JobOut, width: int, fields: list[str]) -> list[str]:
    cells = [job.job_id[:width], job.name, job.workflow, job.application, job.state]
    return [*cells, *(format_value(getattr(job, f)) for f in fields)]


def extra_fields(text: str) -> list[str]:
    """The job fields named by ``BALSAM_LS_FIELDS`` (``a:b`` or ``a,b``), beyond the usual
    columns; an unknown name is a one-line ValidationError."""
    names = [n.strip() for n in text.replace(",", ":").split(":") if n.strip()]
    for name in names:
        if name not in JobOut.model_fields:
            known = ", ".join(sorted(JobOut.model_fields))
            raise ValidationError(f"BALSAM_LS_FIELDS names no job field {name!r} (fields: {known})")
    return [n for n in dict.fromkeys(names) if n not in JOB_COLUMN_FIELDS]


def ls_limit(text: str) -> int | None:
    """``BALSAM_LS_LIMIT`` as a number of jobs (None when unset: list every job)."""
    if not text.strip():
        return None
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValidationError(f"BALSAM_LS_LIMIT must be a whole number above 0 (got {text!r})")
    return limit


def _require_id_part(backend: Backend, part: str) -> None:
    """NotFound when no job id contains ``part``, as for every command taking an id.

    Other filters may still leave nothing to list (an empty table); a mistyped id may not.
    """
    if backend.count_jobs(job_query(job_id__contains=part)) == 0:
        raise NotFound(f"no job with id {part!r}")


def _state_counts(counts: dict[str, int]) -> Any:
    table = make_table("STATE", "COUNT")
    table.show_footer = True
    table.columns[0].footer = "total"
    table.columns[1].footer = str(sum(counts.values()))
    table.columns[1].justify = "right"
    for state in JobState:
        if counts.get(state.value):
            table.add_row(state.value, str(counts[state.value]))
    return table


def _history_table(backend: Backend, job: JobOut, width: int) -> Any:
    title = f"{job.job_id[:width]}  {job.name}  ({job.workflow})"
    table = make_table("TIME", "FROM", "TO", "MESSAGE", title=title)
    for event in backend.history(job.job_id):
        table.add_row(
            format_time(event.timestamp), event.from_state or "-", event.to_state, event.message
        )
    return table


def _job_fields_table(job: JobOut) -> Any:
    table = make_table("FIELD", "VALUE", title=f"{job.job_id}  {job.name}")
    for field, value in job.model_dump().items():
        if field in CALL_FIELDS:
            table.add_row(field, "" if value is None else json.dumps(value, ensure_ascii=False))
        elif field == "function_outcome":
            table.add_row(field, outcome_text(value))
        else:
            table.add_row(field, format_value(value))
    return table


#: A function job's call, shown as the JSON it is.
CALL_FIELDS = ("function_args", "function_kwargs")


def outcome_text(outcome: dict[str, Any] | None) -> str:
    """A function job's outcome as ``ls --verbose`` shows it: what it returned (as JSON), or
    what it raised with the remote traceback below."""
    if not outcome:
        return ""
    error = raised(outcome)
    if error is None:
        return f"returned {json.dumps(outcome['value'], ensure_ascii=False)}"
    head = outcome_summary(outcome, width=10_000)
    trace = error["traceback"].rstrip()
    return f"{head}\n{trace}" if trace else head


def _job_label(job: JobOut, width: int) -> Text:
    return Text(f"{job.job_id[:width]}  {job.name}  {job.state}")


def _job_tree(backend: Backend, jobs: list[JobOut], width: int) -> Tree:
    """Matching jobs whose parents are not listed, each with its descendants below it."""
    known = {j.job_id: j for j in jobs}
    tree = Tree("jobs", hide_root=True)
    expanded: set[str] = set()
    # Depth-first in display order, so a job with several parents is drawn in full the
    # first time it appears and referred to after that.
    stack = [(tree, j) for j in reversed(jobs) if not any(p in known for p in j.parents)]
    while stack:
        node, job = stack.pop()
        if job.job_id in expanded:
            node.add(Text(f"{job.job_id[:width]}  {job.name}  (shown above)"))
            continue
        branch = node.add(_job_label(job, width))
        expanded.add(job.job_id)
        children = _children(backend, job.job_id, known)
        stack += [(branch, child) for child in reversed(children)]
    return tree


def _children(backend: Backend, job_id: str, known: dict[str, JobOut]) -> list[JobOut]:
    ids = backend.children_of(job_id)
    missing = [i for i in ids if i not in known]
    if missing:
        for child in backend.query_jobs(job_query(job_id__in=missing)):
            known[child.job_id] = child
    return sorted((known[i] for i in ids if i in known), key=lambda j: (j.created_at, j.job_id))


def _list_apps(backend: Backend, name: str | None, verbose: bool) -> None:
    clauses = [clause_from_kwargs({"name__icontains": name})] if name else []
    apps = backend.list_apps(clauses)
    columns = ["ID", "NAME", "EXECUTABLE", "DESCRIPTION"]
    if verbose or any(app.container for app in apps):
        columns[3:3] = ["CONTAINER"]
    if verbose:
        columns[3:3] = ["PREPROCESS", "POSTPROCESS", "ENVSCRIPT"]
    # Function apps (docs/functions.md) call a function instead of an executable.
    if verbose or any(app.python for app in apps):
        columns[3:3] = ["PYTHON"]
    if verbose or any(app.function for app in apps):
        columns[3:3] = ["FUNCTION"]
    table = make_table(*columns)
    for app in apps:
        values = app.model_dump()
        table.add_row(*(str(values[c.lower()]) for c in columns))
    show(table)


def _list_workflows(backend: Backend, name: str | None, wf: str | None) -> None:
    """One row per workflow: its job count in total and in each state that has jobs."""
    conditions: dict[str, Any] = {}
    if name:
        conditions["workflow__icontains"] = name
    if wf:
        conditions["workflow__in"] = select_workflows(backend, wf, ignore_case=True)
    counts = {
        w: backend.count_by_state(job_query(workflow=w))
        for w in workflow_names(backend, conditions)
    }
    states = [s.value for s in JobState if any(c.get(s.value) for c in counts.values())]
    table = make_table("WORKFLOW", "JOBS", *states)
    for column in table.columns[1:]:
        column.justify = "right"
    for workflow, per_state in counts.items():
        cells = [str(per_state.get(s, 0) or "") for s in states]
        table.add_row(workflow, str(sum(per_state.values())), *cells)
    show(table)


@click.command("log", cls=BalsamCommand)
@click.option("--list", "list_files", is_flag=True, help="List the log files, newest first.")
@click.option(
    "--lines",
    "-n",
    type=click.IntRange(min=1),
    default=40,
    show_default=True,
    help="How many lines of the newest log to show.",
)
def log_command(list_files: bool, lines: int) -> None:
    """Show the end of the newest log file of the active workflow database.

    \b
    Example:
      balsam log --lines 100
    """
    # Only the directory is needed: logs stay readable when the database server is down.
    site = load_site()
    files = log_files(site.log_dir)
    if list_files:
        table = make_table("MODIFIED", "SIZE", "FILE")
        table.columns[1].justify = "right"
        for path in files:
            stat = path.stat()
            table.add_row(
                _mtime(stat.st_mtime), str(stat.st_size), str(path.relative_to(site.log_dir))
            )
        show(table)
        return
    if not files:
        raise NotFound(f"no log files in {site.log_dir} yet")
    click.echo(f"==> {files[0]} <==")
    for line in tail_lines(files[0], lines):
        click.echo(line)


def _mtime(seconds: float) -> str:
    return format_time(datetime.fromtimestamp(seconds, UTC))


def log_files(log_dir: Path) -> list[Path]:
    """Regular files under ``log_dir``, newest first."""
    if not log_dir.is_dir():
        return []
    files = [p for p in log_dir.rglob("*") if p.is_file()]
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)


def tail_lines(path: Path, count: int, block: int = 65536) -> list[str]:
    """The last ``count`` lines of ``path``, read from the end (logs can be large)."""
    with path.open("rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        data = b""
        while end > 0 and data.count(b"\n") <= count:
            step = min(block, end)
            end -= step
            fh.seek(end)
            data = fh.read(step) + data
    return data.decode(errors="replace").splitlines()[-count:]
