"""Function apps from Python: a job's result, an app for a callable, a job that calls one.

``job.result(timeout=None)`` waits for the job to end (:mod:`balsam.api.waiting`) and says
what its function did, from the outcome its last run stored (docs/functions.md):

- it returned: the value (JSON: tuples come back as lists, dict keys as strings);
- it raised: :class:`~balsam.errors.RemoteError` with the remote type, message and
  traceback text (its ``__cause__`` prints that traceback);
- the job ended otherwise (killed, failed without an outcome, a run killed by a signal, a
  job of an executable app): :class:`~balsam.errors.JobError` saying why;
- not ended within ``timeout`` seconds: :class:`TimeoutError`.

``App.for_function(fn)`` registers (or finds) the app of an importable function and
``Job.calling(fn, args=[...], kwargs={...}, **fields)`` makes an unsaved job that calls it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from balsam.api.apps import App
from balsam.domain.functions import function_problem, raised
from balsam.domain.states import JobState
from balsam.errors import JobError, NotFound, RemoteError, ValidationError

if TYPE_CHECKING:
    from balsam.api.jobs import Job

S = JobState


def result(job: Job, timeout: float | None = None) -> Any:
    """What ``job``'s function returned, once the job has ended (see the module docstring)."""
    if job.job_id is None:
        raise ValidationError(f"job {job.name!r} is not saved yet: it has no result")
    done, _ = type(job).objects.wait([job], timeout=timeout)
    if not done:
        raise TimeoutError(f"job {job.cute_id} has not ended within {timeout} s")
    return stored_result(job)


def stored_result(job: Job) -> Any:
    """The result of an ended job as stored (RemoteError, JobError as :func:`result`)."""
    outcome = job.function_outcome
    error = raised(outcome)
    if error is not None:
        raise RemoteError(
            job.job_id, error["type"], error["message"], error["traceback"], job.cute_id
        )
    if job.state is S.JOB_FINISHED and outcome is not None:
        return outcome["value"]
    raise JobError(f"job {job.cute_id} {_why_no_result(job)}", job.job_id)


def _why_no_result(job: Job) -> str:
    if job.state is S.USER_KILLED:
        return "was killed (USER_KILLED): it has no result"
    if job.state is S.JOB_FINISHED:
        try:
            function = App.objects.get(name=job.application).function
        except NotFound:
            function = ""
        if not function:
            return f"runs app {job.application!r}, which calls no Python function: no result"
        return "finished without a result (marked JOB_FINISHED before its function returned)"
    reason = _last_reason(job)
    returned = " after its function returned" if job.function_outcome else " without a result"
    return f"ended {job.state.value}{returned}" + (f": {reason}" if reason else "")


def _last_reason(job: Job) -> str:
    """The first line of the last history message that says why the job ended as it did."""
    for event in reversed(job.history()):
        if event.message and event.to_state in (S.FAILED, S.RUN_ERROR, S.RUN_TIMEOUT):
            return event.message.splitlines()[0]
    return ""


def function_path(fn: Callable[..., Any]) -> str:
    """``module:qualified.name`` of an importable function (ValidationError for one a job
    cannot import: a lambda, a nested function, one defined in the script itself)."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not callable(fn) or not isinstance(module, str) or not isinstance(qualname, str):
        raise ValidationError(f"{fn!r} is not a function with an import path")
    if module == "__main__":
        raise ValidationError(
            f"function {qualname} is defined in the script itself (__main__), which the job's "
            "process cannot import: put it in a module the job can import"
        )
    path = f"{module}:{qualname}"
    problem = function_problem(path)
    if problem or "<" in qualname:
        raise ValidationError(
            f"function {qualname} cannot be imported by name (a lambda or a nested function?)"
        )
    return path


def app_for(fn: Callable[..., Any], name: str | None = None, python: str = "") -> App:
    """The saved app that calls ``fn``: the one registered with its import path (and
    ``python``), else a new one named ``name`` (default: ``module.qualname``; AlreadyExists
    when an app of that name calls something else, or with another interpreter)."""
    path = function_path(fn)
    found = App.objects.filter(function=path, python=python).first()
    if found is not None and (name is None or found.name == name):
        return found
    app = App(name=name or path.replace(":", "."), function=path, python=python)
    app.save()
    return app


def job_calling(
    job_class: type[Job],
    fn: Callable[..., Any] | App | str,
    args: Iterable[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    **fields: Any,
) -> Job:
    """An unsaved job of ``fn``'s app (a function: :func:`app_for`; an App or an app's name)
    calling it with ``args`` and ``kwargs`` (checked against the function's signature when
    the function itself is given)."""
    if isinstance(fn, App | str):
        application = fn.name if isinstance(fn, App) else fn
    else:
        _check_signature(fn, list(args), dict(kwargs or {}))
        application = app_for(fn).name
    return job_class(
        application=application,
        function_args=list(args),
        function_kwargs=dict(kwargs or {}),
        **fields,
    )


def _check_signature(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: the job's process will say
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ValidationError(
            f"cannot call {fn.__qualname__} with these arguments: {exc}"
        ) from None


__all__ = ["app_for", "function_path", "job_calling", "result", "stored_result"]
