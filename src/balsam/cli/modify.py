"""``balsam modify`` and ``balsam rm``: change a job, remove jobs or apps.

``modify ID state X`` is a validated state change (a reset such as READY or RESTART_READY, or a
give-up such as FAILED); any other attribute is a job field, its VALUE read as the field's type.
``modify --type apps NAME ATTR VALUE`` changes an app instead (Balsam 0.5's flag).

``rm`` takes Balsam 0.5's spellings as well: ``rm job|app``, ``--force`` for ``--yes``, and
``--wf-filter WF`` (jobs of workflow WF exactly: 0.5 itself matched exactly there, since a
removal cannot be undone).
"""

from __future__ import annotations

import json
from typing import Any, get_origin

import click

from balsam.backends.base import Backend
from balsam.cli.common import (
    BalsamCommand,
    client_backend,
    job_query,
    make_table,
    show,
    validated,
)
from balsam.domain.commands import parse_env_assignments
from balsam.domain.functions import parse_json_argument
from balsam.domain.states import parse_state
from balsam.errors import InvalidTransition, NotFound, ValidationError
from balsam.schemas.apps import AppOut, AppUpdate
from balsam.schemas.jobs import JobFields
from balsam.schemas.queries import JobQuery, clause_from_kwargs

TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0"})
#: How many matching objects ``rm`` lists before asking for confirmation.
RM_PREVIEW = 10


def coerce_field(attr: str, text: str) -> Any:
    """``text`` read as the type of job field ``attr``, or a one-line ValidationError."""
    info = JobFields.model_fields.get(attr)
    if info is None:
        known = ", ".join(["state", *sorted(JobFields.model_fields)])
        raise ValidationError(f"unknown job attribute {attr!r} (one of: {known})")
    kind = info.annotation
    if attr in ("function_args", "function_kwargs"):
        return _parse_call(attr, text)
    if kind is bool:
        return _parse_bool(attr, text)
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValidationError(f"{attr} must be an integer (got {text!r})") from None
    if get_origin(kind) is dict:
        return _parse_dict(attr, text)
    return text


def _parse_call(attr: str, text: str) -> Any:
    """A function job's call: JSON (a list or an object); empty or ``null`` for none."""
    if text.strip() in ("", "null"):
        return None
    try:
        return parse_json_argument(text, attr, list if attr == "function_args" else dict)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _parse_bool(attr: str, text: str) -> bool:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValidationError(f"{attr} must be true or false (got {text!r})")


def _parse_dict(attr: str, text: str) -> dict[str, Any]:
    if attr == "environ_vars":
        if not text.strip():
            return {}
        try:
            return parse_env_assignments([text])
        except ValueError as exc:
            raise ValidationError(f"environ_vars: {exc} (write A=1:B=2)") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"{attr} must be a JSON object such as '{{\"k\": 1}}': {exc}"
        ) from None
    if not isinstance(value, dict):
        raise ValidationError(f"{attr} must be a JSON object such as '{{\"k\": 1}}' (got {text!r})")
    return value


def _by_id(job_id: str) -> JobQuery:
    return job_query(job_id=job_id)


# VALUE may itself start with a dash (new args such as "--steps 10"): take it as given.
@click.command("modify", cls=BalsamCommand, context_settings={"ignore_unknown_options": True})
@click.argument("job_id", metavar="ID")
@click.argument("attr")
@click.argument("value")
@click.option(
    "--type",
    "kind",
    type=click.Choice(["jobs", "apps"]),
    default="jobs",
    show_default=True,
    help="Change a job, or an app (ID: its name or numeric id).",
)
def modify_command(job_id: str, attr: str, value: str, kind: str) -> None:
    """Set attribute ATTR of job ID (or unique prefix) to VALUE.

    With --type apps, ID is an app's name (or numeric id) and ATTR one of executable,
    description, preprocess, postprocess, envscript, container (an image; "" for none),
    function (MODULE:FUNCTION; "" for none), python (a function app's interpreter).

    ATTR "state" is a validated state change: any state but RUNNING and AWAITING_PARENTS
    (CREATED starts the job over), and a RUNNING job only to USER_KILLED, FAILED or
    JOB_FINISHED; other attributes are job fields, VALUE read as the field's type.

    \b
    Examples:
      balsam modify 3f2a1b4c state RESTART_READY
      balsam modify 3f2a num_nodes 4
      balsam modify 3f2a environ_vars A=1:B=2
      balsam modify 3f2a data '{"mesh": [64, 64]}'
    """
    attr = attr.strip().replace("-", "_")
    if kind == "apps":
        _modify_app(job_id, attr, value)
        return
    if attr == "state":
        try:
            state = parse_state(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        with client_backend() as (_site, backend):
            job = backend.set_state(backend.resolve_job_id(job_id), state, "set by user")
        click.echo(f"Job {job.job_id[:8]} ({job.name}) is now {job.state}")
        return
    coerced = coerce_field(attr, value)
    with client_backend() as (_site, backend):
        full_id = backend.resolve_job_id(job_id)
        backend.update_jobs(_by_id(full_id), {attr: coerced})
        job = backend.get_job(full_id)
    click.echo(f"Job {full_id[:8]} ({job.name}): {attr} = {getattr(job, attr)!r}")


def _modify_app(ident: str, attr: str, value: str) -> None:
    """Set field ``attr`` of the app named (or numbered) ``ident``."""
    fields = sorted(AppUpdate.model_fields)
    if attr not in fields:
        raise ValidationError(f"unknown app attribute {attr!r} (one of: {', '.join(fields)})")
    changes = validated(AppUpdate, {attr: value})
    with client_backend() as (_site, backend):
        app = _one_app(backend, ident)
        changed = backend.update_app(app.name, changes)
    click.echo(f"App {changed.name}: {attr} = {getattr(changed, attr)!r}")


def _one_app(backend: Backend, ident: str) -> AppOut:
    """The app named ``ident``, or numbered ``ident`` (as ``balsam ls apps`` shows)."""
    named = backend.list_apps([clause_from_kwargs({"name": ident})])
    if not named and ident.strip().isdigit():
        named = backend.list_apps([clause_from_kwargs({"id": int(ident)})])
    if not named:
        raise NotFound(f"no application named {ident!r} (see 'balsam ls apps')")
    return named[0]


@click.command("rm", cls=BalsamCommand)
@click.argument("objects", type=click.Choice(["jobs", "apps", "job", "app"]))
@click.option("--name", help="Jobs whose name contains this text; the app with this name.")
@click.option("--id", "ident", help="A job id (or unique prefix); an app's numeric id.")
@click.option("--wf-filter", "wf", metavar="WF", help="Only jobs of workflow WF (exactly).")
@click.option("--all", "everything", is_flag=True, help="Every job, or every app.")
@click.option(
    "--yes", "-y", "--force", "yes", is_flag=True, help="Remove without asking for confirmation."
)
def rm_command(
    objects: str,
    name: str | None,
    ident: str | None,
    wf: str | None,
    everything: bool,
    yes: bool,
) -> None:
    """Remove jobs (with their history) or apps no job uses.

    \b
    Examples:
      balsam rm jobs --name hi
      balsam rm jobs --wf-filter test --force
      balsam rm apps --name SayHello --yes
    """
    apps = objects.startswith("app")
    if apps and wf is not None:
        raise ValidationError("--wf-filter selects jobs: it does not apply to 'balsam rm apps'")
    if everything == bool(name or ident or wf):
        raise ValidationError("say what to remove: --name, --id and/or --wf-filter, or --all")
    with client_backend() as (_site, backend):
        if apps:
            _rm_apps(backend, name, ident, yes)
        else:
            _rm_jobs(backend, name, ident, wf, yes)


def _rm_jobs(
    backend: Backend, name: str | None, ident: str | None, wf: str | None, yes: bool
) -> None:
    conditions: dict[str, Any] = {}
    if name:
        conditions["name__icontains"] = name
    if wf:
        conditions["workflow"] = wf
    if ident:
        conditions["job_id"] = backend.resolve_job_id(ident)
    query = job_query(**conditions)
    count = backend.count_jobs(query)
    if count == 0:
        if conditions:
            raise NotFound("no jobs match; nothing removed")
        click.echo("No jobs to remove")
        return
    if not yes:
        preview = backend.query_jobs(query.model_copy(update={"limit": RM_PREVIEW}))
        table = make_table("ID", "NAME", "WORKFLOW", "STATE")
        for job in preview:
            table.add_row(job.job_id[:8], job.name, job.workflow, job.state)
        show(table)
        if count > len(preview):
            click.echo(f"... and {count - len(preview)} more")
        click.confirm(f"Remove {count} job(s)", abort=True)
    removed = backend.delete_jobs(query)
    click.echo(f"Removed {removed} job(s)")


def _rm_apps(backend: Backend, name: str | None, ident: str | None, yes: bool) -> None:
    apps = _matching_apps(backend, name, ident)
    if not apps:
        if name or ident:
            raise NotFound("no apps match; nothing removed")
        click.echo("No apps to remove")
        return
    names = [a.name for a in apps]
    used = backend.count_jobs(job_query(application__in=names))
    if used:
        # Checked for all apps up front so that a refusal removes none of them.
        raise InvalidTransition(f"{used} job(s) use {', '.join(names)}; remove those jobs first")
    if not yes:
        click.echo(f"Apps to remove: {', '.join(names)}")
        click.confirm(f"Remove {len(names)} app(s)", abort=True)
    for app_name in names:
        backend.delete_app(app_name)
    click.echo(f"Removed {len(names)} app(s): {', '.join(names)}")


def _matching_apps(backend: Backend, name: str | None, ident: str | None) -> list[AppOut]:
    conditions: dict[str, Any] = {}
    if name:
        conditions["name"] = name
    if ident:
        try:
            conditions["id"] = int(ident)
        except ValueError:
            raise ValidationError(f"an app's id is a number (got {ident!r})") from None
    clauses = [clause_from_kwargs(conditions)] if conditions else []
    return backend.list_apps(clauses)
