"""``balsam job``, ``balsam dep`` and ``balsam kill``: add jobs, link them, stop them.

Balsam 0.5's other spellings live here too: ``balsam killjob`` (``kill``), ``balsam mkchild``
(a job that waits for the job running it) and ``balsam make_dummies N`` (test jobs).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import click

from balsam.backends.base import Backend
from balsam.cli.common import (
    BalsamCommand,
    WordsOption,
    client_backend,
    format_value,
    job_query,
    make_table,
    parse_pairs,
    show,
    validated,
)
from balsam.config import Site
from balsam.domain.commands import CommandError, parse_env_assignments, render_command
from balsam.domain.functions import call_problem, call_text, parse_json_argument
from balsam.errors import NotFound, ValidationError
from balsam.schemas.apps import AppCreate, AppOut
from balsam.schemas.jobs import JobCreate, JobFields

#: Fields always shown in the confirmation summary, whatever their value.
ALWAYS_SHOWN = ("name", "workflow", "application", "args")
#: Bound of ``--coschedule-num-nodes`` (the largest integer every database stores).
MAX_COSCHEDULE_NODES = 2147483647
#: What ``balsam make_dummies`` adds at most in one call.
MAX_DUMMIES = 1_000_000
#: A function job's call: the field, its flag, the JSON it takes (docs/functions.md).
CALL_OPTIONS = (
    ("function_args", "--function-args", list),
    ("function_kwargs", "--function-kwargs", dict),
)


def _default(field: str) -> Any:
    """The job field's default, so Click's help and the schema never disagree."""
    return JobFields.model_fields[field].get_default(call_default_factory=True)


def _int_option(flag: str, field: str, help_text: str) -> Any:
    return click.option(
        flag, field, type=int, default=_default(field), show_default=True, help=help_text
    )


JOB_OPTIONS = [
    click.option("--name", required=True, help="Job name (letters, digits, _.+=@-)."),
    click.option("--workflow", required=True, help="Workflow the job belongs to."),
    click.option("--application", required=True, help="Name of a registered app."),
    click.option(
        "--args",
        cls=WordsOption,
        default="",
        help="Arguments appended to the app's command (one or more words).",
    ),
    click.option(
        "--function-args",
        "--call-args",
        "function_args",
        default=None,
        metavar="JSON",
        help="For a function app: its positional arguments, a JSON list, e.g. '[1, \"a\"]'.",
    ),
    click.option(
        "--function-kwargs",
        "--kwargs",
        "function_kwargs",
        default=None,
        metavar="JSON",
        help="For a function app: its arguments by name, a JSON object, e.g. '{\"x\": 1}'.",
    ),
    click.option("--description", cls=WordsOption, default="", help="Free text (words)."),
    _int_option("--num-nodes", "num_nodes", "Nodes the job runs on."),
    _int_option("--ranks-per-node", "ranks_per_node", "MPI ranks on each node."),
    _int_option("--threads-per-rank", "threads_per_rank", "Threads (cores) of each rank."),
    _int_option("--threads-per-core", "threads_per_core", "Hardware threads per core."),
    _int_option("--gpus-per-rank", "gpus_per_rank", "GPUs of each rank."),
    click.option(
        "--cpu-affinity",
        type=click.Choice(["none", "depth", "core"]),
        default=_default("cpu_affinity"),
        show_default=True,
        help="How ranks are bound to cores.",
    ),
    _int_option("--node-packing-count", "node_packing_count", "Jobs sharing one node at once."),
    click.option(
        "--wall-time-minutes",
        "--wall-minutes",
        "wall_time_minutes",
        type=int,
        default=_default("wall_time_minutes"),
        show_default=True,
        help="Expected run time.",
    ),
    click.option(
        "--coschedule-num-nodes",
        type=click.IntRange(min=0, max=MAX_COSCHEDULE_NODES),
        default=0,
        help="Balsam 0.5's extra nodes to reserve beside the job: kept in the job's data, "
        "not acted on.",
    ),
    click.option("--env", multiple=True, metavar="VAR=VAL", help="Environment (repeatable)."),
    click.option(
        "--mpi-flags", cls=WordsOption, default="", help="Extra flags for the MPI launcher."
    ),
    click.option(
        "--input-files",
        cls=WordsOption,
        default=_default("input_files"),
        show_default=True,
        help="Parents' files to stage in (globs).",
    ),
    click.option("--url-in", default="", help="Where to stage input files in from."),
    click.option("--url-out", default="", help="Where to stage output files out to."),
    click.option(
        "--stage-out-files", cls=WordsOption, default="", help="Files to stage out (globs)."
    ),
    click.option(
        "--post_handle_error",
        "--post-handle-error",
        "post_error_handler",
        is_flag=True,
        help="The postprocess step handles RUN_ERROR.",
    ),
    click.option(
        "--post_handle_timeout",
        "--post-handle-timeout",
        "post_timeout_handler",
        is_flag=True,
        help="The postprocess step handles RUN_TIMEOUT.",
    ),
    click.option(
        "--disable_auto_timeout_retry",
        "--disable-auto-timeout-retry",
        "disable_timeout_retry",
        is_flag=True,
        help="Do not rerun the job after a timeout.",
    ),
    _int_option("--max-error-retries", "max_error_retries", "Reruns after RUN_ERROR."),
    _int_option("--max-timeout-retries", "max_timeout_retries", "Reruns after RUN_TIMEOUT."),
    _int_option(
        "--max-lost-retries", "max_lost_retries", "Reruns after the launcher running it was lost."
    ),
    click.option("--tag", multiple=True, metavar="KEY=VALUE", help="A tag (repeatable)."),
    click.option(
        "--parent",
        "parents",
        multiple=True,
        metavar="ID",
        help="Id (or unique prefix) of a job this one waits for (repeatable).",
    ),
    click.option("--yes", "-y", is_flag=True, help="Add without asking for confirmation."),
]


def _with_job_options(func: Any) -> Any:
    for option in reversed(JOB_OPTIONS):
        func = option(func)
    return func


def job_fields(options: dict[str, Any]) -> dict[str, Any]:
    """The JobCreate fields named by the parsed command-line ``options`` (parents aside)."""
    values = dict(options)
    values.pop("yes", None)
    values.pop("parents", None)
    values["stage_in_url"] = values.pop("url_in")
    values["stage_out_url"] = values.pop("url_out")
    values["auto_timeout_retry"] = not values.pop("disable_timeout_retry")
    try:
        values["environ_vars"] = parse_env_assignments(list(values.pop("env")))
    except ValueError as exc:
        raise ValidationError(f"--env: {exc}") from None
    values["tags"] = parse_pairs(values.pop("tag"), "--tag")
    for field, flag, kind in CALL_OPTIONS:
        text = values.pop(field, None)
        if text is not None:
            try:
                values[field] = parse_json_argument(text, flag, kind)
            except ValueError as exc:
                raise ValidationError(str(exc)) from None
    coschedule = values.pop("coschedule_num_nodes", 0)
    if coschedule:
        # No launcher or service of this Balsam reserves nodes beside a job: the number is
        # kept where a script can read it, and nothing else is done with it.
        values["data"] = {"coschedule_num_nodes": coschedule}
    return values


def _summary(spec: JobCreate, app: AppOut, site: Site | None, in_workflow: int) -> None:
    """Print what is about to be added: set fields, the command line it will run and the
    directory it will run in (as Balsam 0.5's prompt did)."""
    table = make_table("FIELD", "VALUE")
    for field, value in spec.model_dump().items():
        if field in ALWAYS_SHOWN or value != _default_or_none(field):
            shown = json.dumps(value) if field.startswith("function_") else format_value(value)
            table.add_row(field, shown)
    if app.function:
        table.add_row("call", call_text(app.function, spec.function_args, spec.function_kwargs))
    else:
        try:
            command = render_command(app.executable, spec.args, app.envscript).display()
        except CommandError as exc:
            command = f"(cannot render: {exc})"
        table.add_row("command", command)
    table.add_row("working directory", str(planned_workdir(site, spec)))
    show(table)
    click.echo(f"The workflow {spec.workflow!r} has {in_workflow} job(s) in the database now")


def planned_workdir(site: Site | None, spec: JobCreate) -> Path:
    """Where the job will run: the rule the store applies when it adds the job (relative to
    the launcher's site directory for a client that has none).

    The CLI holds only a Backend, so the rule is restated here; a test checks that the
    directory shown is the one the job then gets.
    """
    job_id = spec.job_id or ""
    under = Path("data") / spec.workflow / f"{spec.name}_{job_id[:8]}"
    return under if site is None else site.path / under


def _default_or_none(field: str) -> Any:
    info = JobCreate.model_fields[field]
    return None if info.is_required() else info.get_default(call_default_factory=True)


@click.command("job", cls=BalsamCommand)
@_with_job_options
def job_command(**options: Any) -> None:
    """Add a job: one run of an app with its arguments and resources.

    Prints the new job's id.

    \b
    Examples:
      balsam job --name hi --workflow test --application SayHello --args 'world!' --yes
      balsam job --name fit1 --workflow test --application Fit --kwargs '{"x": 1}' --yes
    """
    click.echo(_add_job(options, ask=not options["yes"]))


def _add_job(options: dict[str, Any], ask: bool, parent: str | None = None) -> str:
    """Add the job ``options`` describe (waiting for ``parent`` too); its id."""
    spec = validated(JobCreate, job_fields(options))
    with client_backend() as (site, backend):
        app = backend.get_app(spec.application)
        # Before asking: the backend would refuse it after the confirmation.
        has_call = spec.function_args is not None or spec.function_kwargs is not None
        problem = call_problem(bool(app.function), spec.args, has_call)
        if problem:
            raise ValidationError(f"job {spec.name!r}: {problem} (app {app.name!r})")
        wanted = [*([parent] if parent else []), *options["parents"]]
        parents = [backend.resolve_job_id(p) for p in wanted]
        # The id is chosen here: a create repeated after a lost answer creates one job.
        update = {"parents": list(dict.fromkeys(parents)), "job_id": str(uuid.uuid4())}
        spec = spec.model_copy(update=update)
        if ask:
            in_workflow = backend.count_jobs(job_query(workflow=spec.workflow))
            _summary(spec, app, site, in_workflow)
            click.confirm("Confirm adding job to DB", abort=True)
        (job,) = backend.create_jobs([spec])
    return job.job_id


@click.command("mkchild", cls=BalsamCommand)
@_with_job_options
def mkchild_command(**options: Any) -> None:
    """Add a job that waits for the job this runs in (BALSAM_JOB_ID), as Balsam 0.5 did.

    Meant for a job's own scripts, so it never asks for confirmation (--yes is accepted).
    Takes the flags of 'balsam job'; prints the new job's id.

    \b
    Example (inside a job):
      balsam mkchild --name post --workflow test --application Reduce --args out.dat
    """
    current = os.environ.get("BALSAM_JOB_ID", "").strip()
    if not current:
        raise ValidationError(
            "mkchild adds a child of the running job, but BALSAM_JOB_ID is not set "
            "(outside a job use 'balsam job --parent ID')"
        )
    click.echo(_add_job(options, ask=False, parent=current))


@click.command("make_dummies", cls=BalsamCommand)
@click.argument("num", type=click.IntRange(min=1, max=MAX_DUMMIES), metavar="N")
def make_dummies_command(num: int) -> None:
    """Add N quick test jobs (app 'dummy' running 'echo hello', workflow 'dummy').

    The app is registered first when it is missing. As in Balsam 0.5, the jobs pack 64 to a
    node in serial mode.

    \b
    Example:
      balsam make_dummies 100
    """
    with client_backend() as (_site, backend):
        try:
            backend.get_app("dummy")
        except NotFound:
            backend.create_app(AppCreate(name="dummy", executable="echo"))
        specs = [
            JobCreate(
                job_id=str(uuid.uuid4()),
                name=f"dummy{i}",
                workflow="dummy",
                application="dummy",
                args="hello",
                description="Added by balsam make_dummies",
                node_packing_count=64,
            )
            for i in range(num)
        ]
        backend.create_jobs(specs)
    click.echo(f"Added {num} dummy job(s) to workflow 'dummy'")


@click.command("dep", cls=BalsamCommand)
@click.argument("parent")
@click.argument("child")
def dep_command(parent: str, child: str) -> None:
    """Make job CHILD wait until job PARENT has finished (ids or unique prefixes).

    \b
    Example:
      balsam dep 3f2a1b4c 9e8d7c6b
    """
    with client_backend() as (_site, backend):
        parent_id = backend.resolve_job_id(parent)
        child_id = backend.resolve_job_id(child)
        backend.add_dependency(parent_id, child_id)
        click.echo(f"{_label(backend, child_id)} now depends on {_label(backend, parent_id)}")


def _label(backend: Backend, job_id: str) -> str:
    job = backend.get_job(job_id)
    return f"{job.job_id[:8]} ({job.name})"


@click.command("kill", cls=BalsamCommand)
@click.option("--id", "job_id", required=True, help="Id (or unique prefix) of the job.")
@click.option("--recursive", is_flag=True, help="Kill its descendants too.")
def kill_command(job_id: str, recursive: bool) -> None:
    """Mark a job USER_KILLED (a running one is stopped by its launcher).

    \b
    Example:
      balsam kill --id 3f2a1b4c --recursive
    """
    with client_backend() as (_site, backend):
        full_id = backend.resolve_job_id(job_id)
        killed = backend.kill_jobs(full_id, recursive=recursive)
    click.echo(f"Killed {len(killed)} job(s): {', '.join(k[:8] for k in killed)}")


#: Balsam 0.5's name of ``balsam kill``: the same flags and the same effect.
killjob_command = BalsamCommand(
    "killjob",
    callback=kill_command.callback,
    params=kill_command.params,
    help="Balsam 0.5's name of 'balsam kill': mark a job USER_KILLED (same flags).",
)
