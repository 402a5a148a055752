"""Lazy, Django-style query sets of jobs over a Backend (``Job.objects.filter(...)``).

A :class:`JobQuerySet` is a description of a query: ``filter``, ``exclude``, ``order_by`` and
slicing return new query sets without touching the database. Iterating, ``len()``, ``bool()``
or indexing runs one backend query and caches the jobs, as Django does; ``count()``,
``exists()``, ``first()``, ``get()``, ``update()`` and ``delete()`` each run their own query.

Decisions that differ from Django, on purpose:

* ``update()`` and ``delete()`` on a sliced set act on exactly the jobs of that slice
  (Django refuses them); filtering or reordering a sliced set is refused, as in Django.
* ``update(state=...)`` is all or nothing: every job's move is checked against the state
  machine before anything is written; then the fields change in one call and each state through
  the state machine (validated again, fast-forwarded and recorded). Jobs already in the target
  state keep it, as ``save()`` of an unchanged state does.
* ``values_list()`` returns a list, not a lazy set; ``delete()`` returns the number deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, overload

from balsam.api.context import get_backend
from balsam.api.lookups import (
    FetchedResults,
    build_clause,
    check_order,
    field_error,
    slice_of_window,
    slice_window,
)
from balsam.domain.states import (
    TERMINAL_STATES,
    USER_SETTABLE_STATES,
    JobState,
    TransitionError,
    parse_state,
    validate_user_move,
)
from balsam.errors import InvalidTransition, ValidationError
from balsam.schemas.jobs import JobFields, JobOut
from balsam.schemas.queries import Clause, Condition, JobQuery, Lookup

if TYPE_CHECKING:
    from balsam.api.jobs import Job

#: Fields a job query may filter and order on.
QUERY_FIELDS: frozenset[str] = frozenset(set(JobOut.model_fields) - {"parents"})
#: Django's ``pk`` is the job id.
ALIASES: dict[str, str] = {"pk": "job_id"}
#: Fields ``update()`` may change (besides ``state``).
EDITABLE_FIELDS: frozenset[str] = frozenset(JobFields.model_fields)
#: How many jobs ``repr()`` shows.
REPR_LIMIT = 20


class JobQuerySet(FetchedResults["Job"]):
    """A lazy query over jobs; every method that narrows it returns a new one."""

    def __init__(
        self,
        clauses: Sequence[Clause] = (),
        order: Sequence[str] = (),
        offset: int = 0,
        limit: int | None = None,
    ) -> None:
        self._clauses = tuple(clauses)
        self._order = tuple(order)
        self._offset = offset
        self._limit = limit
        self._cache: list[Job] | None = None

    # --- narrowing (lazy) -------------------------------------------------------------------

    def all(self) -> JobQuerySet:
        """A fresh copy of this query (its results are fetched again)."""
        return self._copy()

    def filter(self, **kwargs: Any) -> JobQuerySet:
        """Jobs matching every ``field__lookup=value`` given."""
        return self._narrow(kwargs, negate=False)

    def exclude(self, **kwargs: Any) -> JobQuerySet:
        """Jobs not matching all of ``field__lookup=value`` together."""
        return self._narrow(kwargs, negate=True)

    def order_by(self, *keys: str) -> JobQuerySet:
        """Order by ``keys`` (``"-name"`` for descending); replaces any earlier order."""
        self._refuse_if_sliced("order")
        return self._copy(order=tuple(check_order(keys, QUERY_FIELDS, ALIASES)))

    def _narrow(self, kwargs: dict[str, Any], negate: bool) -> JobQuerySet:
        self._refuse_if_sliced("filter")
        if not kwargs:
            return self._copy()
        clause = build_clause(_expand_querysets(kwargs), QUERY_FIELDS, ALIASES, negate)
        return self._copy(clauses=(*self._clauses, clause))

    def _refuse_if_sliced(self, what: str) -> None:
        if self._is_sliced:
            raise ValidationError(f"cannot {what} a query once a slice has been taken")

    @property
    def _is_sliced(self) -> bool:
        return self._offset > 0 or self._limit is not None

    def _copy(self, **changes: Any) -> JobQuerySet:
        values: dict[str, Any] = {
            "clauses": self._clauses,
            "order": self._order,
            "offset": self._offset,
            "limit": self._limit,
        }
        values.update(changes)
        return JobQuerySet(**values)

    def to_query(self) -> JobQuery:
        """The backend query this set stands for."""
        return JobQuery(
            clauses=list(self._clauses),
            order_by=list(self._order),
            offset=self._offset,
            limit=self._limit,
        )

    # --- evaluation -------------------------------------------------------------------------

    def _fetch(self) -> list[Job]:
        if self._cache is None:
            self._cache = _wrap(get_backend().query_jobs(self.to_query()))
        return self._cache

    @overload
    def __getitem__(self, index: int) -> Job: ...

    @overload
    def __getitem__(self, index: slice) -> JobQuerySet: ...

    def __getitem__(self, index: int | slice) -> Job | JobQuerySet:
        if isinstance(index, slice):
            offset, limit = slice_of_window(self._offset, self._limit, index)
            return self._copy(offset=offset, limit=limit)
        if self._cache is not None:
            return self._cache[index]
        offset, limit = slice_window(self._offset, self._limit, index, index + 1)
        found = self._copy(offset=offset, limit=limit)._fetch()
        if not found:
            raise IndexError(f"job index {index} out of range")
        return found[0]

    def __repr__(self) -> str:
        shown = list(self._cache if self._cache is not None else self[: REPR_LIMIT + 1])
        items = [repr(j) for j in shown[:REPR_LIMIT]]
        if len(shown) > REPR_LIMIT:
            items.append("...(more)")
        return f"<JobQuerySet [{', '.join(items)}]>"

    def count(self) -> int:
        """How many jobs match (one COUNT query unless the jobs are fetched already)."""
        if self._cache is not None:
            return len(self._cache)
        total = get_backend().count_jobs(self.to_query())
        remaining = max(0, total - self._offset)
        return remaining if self._limit is None else min(remaining, self._limit)

    def exists(self) -> bool:
        """True when at least one job matches."""
        return self.first() is not None

    def first(self) -> Job | None:
        """The first matching job (by this set's order, else oldest first), or None."""
        if self._cache is not None:
            return self._cache[0] if self._cache else None
        found = self[:1]._fetch()
        return found[0] if found else None

    def get(self, **kwargs: Any) -> Job:
        """The one job matching; ``Job.DoesNotExist`` or ``Job.MultipleObjectsReturned`` else."""
        model = _model()
        narrowed = self.filter(**kwargs) if kwargs else self
        found = narrowed[:2]._fetch()
        what = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "this query"
        if not found:
            raise model.DoesNotExist(f"no job matches {what}")
        if len(found) > 1:
            raise model.MultipleObjectsReturned(f"more than one job matches {what}")
        return found[0]

    def values_list(self, *fields: str, flat: bool = False) -> list[Any]:
        """Field values of the matching jobs: tuples, or plain values with ``flat=True``."""
        if flat and len(fields) != 1:
            raise ValidationError("values_list(flat=True) takes exactly one field")
        known = QUERY_FIELDS | {"parents"}
        names = [ALIASES.get(f, f) for f in fields] or sorted(QUERY_FIELDS)
        for name in names:
            if name not in known:
                raise field_error(name, known)
        jobs = self._fetch()
        if flat:
            return [getattr(job, names[0]) for job in jobs]
        return [tuple(getattr(job, n) for n in names) for job in jobs]

    def values(self, *fields: str) -> list[dict[str, Any]]:
        """Field values of the matching jobs as dicts (Django's, for 0.5 scripts)."""
        names = [ALIASES.get(f, f) for f in fields] or sorted(QUERY_FIELDS)
        return [dict(zip(names, row, strict=True)) for row in self.values_list(*names)]

    def distinct(self) -> JobQuerySet:
        """The same set: jobs are never listed twice (Django's ``distinct()``, for 0.5)."""
        return self

    # --- changes ----------------------------------------------------------------------------

    def update(self, **fields: Any) -> int:
        """Change fields of every matching job; ``state=`` goes through the state machine.

        All or nothing: a state move that any job may not make, or a field value that any job
        may not take, raises before anything is written. Returns how many jobs matched.
        """
        state = _target_state(fields.pop("state", None))
        unknown = set(fields) - EDITABLE_FIELDS
        if unknown:
            raise field_error(sorted(unknown)[0], EDITABLE_FIELDS | {"state"})
        backend = get_backend()
        query = self._exact_query()
        matched: list[JobOut] = []
        moving: list[JobOut] = []
        if state is not None:
            matched = backend.query_jobs(query)
            moving = [job for job in matched if job.state != state]
            check_moves(moving, state)
        values = _model().compat_values(fields)
        # One transaction, validated per job: a bad value leaves every job (and state) as it was.
        count = backend.update_jobs(query, values) if values else len(matched)
        if state is not None:
            for job in moving:
                backend.set_state(job.job_id, state, "set by user")
        self._cache = None
        return count

    def kill(self, recursive: bool = False) -> list[str]:
        """Kill every matching job that has not ended (and, with ``recursive``, the jobs below
        each); returns the ids killed.

        Made for a job that stops its siblings (``Job.objects.filter(...).kill()``): a job
        that ends while this runs is passed over, not an error, so no race needs handling.
        Running jobs are stopped by their launcher within ``kill_poll_seconds``.
        """
        backend = get_backend()
        matched = backend.query_jobs(self._exact_query())
        live = [j.job_id for j in matched if j.state not in TERMINAL_STATES]
        # Ids in the order killed (a dict: a descendant of one match may be another match).
        killed: dict[str, None] = {}
        for job_id in live:
            if job_id in killed:
                continue
            try:
                now_killed = backend.kill_jobs(job_id, recursive)
            except InvalidTransition:
                continue  # kill_jobs refuses only a job that has ended: it did after the query
            killed.update(dict.fromkeys(now_killed))
        self._cache = None
        return list(killed)

    def delete(self) -> int:
        """Delete every matching job (with its dependencies and history); returns how many."""
        deleted = get_backend().delete_jobs(self._exact_query())
        self._cache = None
        return deleted

    def _exact_query(self) -> JobQuery:
        """A query for exactly these jobs: a sliced set is pinned to the ids in its window."""
        if not self._is_sliced:
            return JobQuery(clauses=list(self._clauses))
        ids = [o.job_id for o in get_backend().query_jobs(self.to_query())]
        cond = Condition(field="job_id", lookup=Lookup.IN, value=ids)
        return JobQuery(clauses=[Clause(conditions=[cond])])

    def create(self, **fields: Any) -> Job:
        """Make and save a job in one step."""
        job = _model()(**fields)
        job.save()
        return job

    def bulk_create(self, jobs: Iterable[Job], batch_size: int | None = None) -> list[Job]:
        """Save many new jobs in one backend call (or one per ``batch_size``); all or nothing.

        Each job gets its id, state and working directory; they are returned in order. The
        call streams: jobs are validated and written a chunk at a time in one transaction, so
        a hundred thousand jobs cost no more memory than their own objects.
        """
        pending = list(jobs)
        if batch_size is not None and batch_size < 1:
            raise ValidationError("batch_size must be at least 1")
        step = batch_size or max(len(pending), 1)
        for start in range(0, len(pending), step):
            _model().create_bulk(pending[start : start + step])
        return pending


def _model() -> type[Job]:
    # Imported late: balsam.api.jobs builds on this module (Job.objects is a JobQuerySet).
    from balsam.api.jobs import Job

    return Job


def _wrap(outs: list[JobOut]) -> list[Job]:
    model = _model()
    return [model.from_out(out) for out in outs]


def _expand_querysets(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``job_id__in=<JobQuerySet>`` means the ids of that set's jobs."""
    return {
        k: [j.job_id for j in v] if isinstance(v, JobQuerySet) else v for k, v in kwargs.items()
    }


def _target_state(value: Any) -> JobState | None:
    """The state ``update(state=...)`` asks for, checked before anything is written."""
    if value is None:
        return None
    try:
        state = parse_state(str(value))
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    return require_user_settable(state)


def require_user_settable(state: JobState) -> JobState:
    """``state`` if a user may set it at all (not RUNNING or AWAITING_PARENTS), else
    InvalidTransition."""
    if state not in USER_SETTABLE_STATES:
        allowed = ", ".join(sorted(USER_SETTABLE_STATES))
        raise InvalidTransition(f"a user may set a job's state only to one of: {allowed}")
    return state


def check_moves(jobs: Sequence[JobOut], target: JobState) -> None:
    """InvalidTransition, naming the first job refused, unless every one may move to ``target``.

    Read-only: callers check every job before writing any, so a refusal changes nothing.
    """
    refused = []
    for job in jobs:
        try:
            validate_user_move(job.state, target)
        except TransitionError as exc:
            refused.append(f"job {job.job_id[:8]} ({job.name}): {exc}")
    if not refused:
        return
    if len(jobs) == 1:
        raise InvalidTransition(refused[0])
    more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
    raise InvalidTransition(
        f"{len(refused)} of {len(jobs)} jobs cannot move to {target}, so none was changed: "
        f"{refused[0]}{more}"
    )
