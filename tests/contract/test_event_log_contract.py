"""``Backend.events_since``: the event log in id order, paged and resumable, on every backend.

What streams rely on: ids only grow; reading from each page's cursor returns every event once,
in id order, whether many writers commit at once (PostgreSQL commits them out of id order) or
a workflow filter skips most of them.
"""

from __future__ import annotations

import threading

import pytest

from balsam.backends.base import Backend
from balsam.domain.states import JobState
from balsam.errors import ValidationError
from balsam.schemas import AppCreate, ClaimRequest, JobCreate, JobQuery, StateUpdate
from balsam.schemas.jobs import MAX_EVENT_ID, MAX_EVENT_PAGE, StreamEvent
from balsam.schemas.queries import clause_from_kwargs

S = JobState


def _jobs(backend: Backend, *workflows: str) -> list[str]:
    backend.create_app(AppCreate(name="A", executable="true"))
    made = backend.create_jobs(
        [JobCreate(name=f"j{i}", workflow=w, application="A") for i, w in enumerate(workflows)]
    )
    return [j.job_id for j in made]


def _read_all(
    backend: Backend, after: int = 0, limit: int = 500, workflow: str | None = None
) -> tuple[list[StreamEvent], int]:
    """Every event after ``after``, page by page from each cursor; and the last cursor."""
    found: list[StreamEvent] = []
    for _ in range(10_000):
        page = backend.events_since(after, limit, workflow)
        found += page.events
        after = page.cursor
        if not page.more:
            return found, after
    raise AssertionError("the pages never ended")


def _histories(backend: Backend, job_ids: list[str]) -> dict[str, list[tuple[str, str, str]]]:
    return {j: [(e.from_state, e.to_state, e.message) for e in backend.history(j)] for j in job_ids}


def _by_job(events: list[StreamEvent]) -> dict[str, list[tuple[str, str, str]]]:
    grouped: dict[str, list[tuple[str, str, str]]] = {}
    for e in events:
        grouped.setdefault(e.job_id, []).append((e.from_state, e.to_state, e.message))
    return grouped


def test_an_empty_log_has_nothing_and_a_cursor_of_zero(backend: Backend) -> None:
    page = backend.events_since(0, 10)
    assert (page.events, page.cursor, page.more) == ([], 0, False)


def test_every_event_once_in_id_order_with_its_workflow(backend: Backend) -> None:
    a, b = _jobs(backend, "x", "y")
    session = backend.open_session("t", "h", 1)
    backend.claim_jobs(session.id, ClaimRequest(job_ids=[a]))
    backend.record_updates(session.id, [StateUpdate(job_id=a, state=S.RUNNING)])
    backend.note_jobs([b], "looked at")
    events, cursor = _read_all(backend)
    ids = [e.id for e in events]
    assert ids == sorted(set(ids)) and ids[0] > 0
    assert cursor == ids[-1] == backend.change_marker()
    assert _by_job(events) == _histories(backend, [a, b])
    assert {e.job_id: e.workflow for e in events} == {a: "x", b: "y"}
    assert events[-1].message == "looked at"
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)


def test_a_read_from_a_cursor_returns_only_what_came_after(backend: Backend) -> None:
    (a,) = _jobs(backend, "x")
    first, cursor = _read_all(backend)
    again = backend.events_since(cursor, 10)
    assert (again.events, again.cursor, again.more) == ([], cursor, False)
    backend.set_state(a, S.USER_KILLED, "stop")
    later, newer = _read_all(backend, cursor)
    assert [(e.to_state, e.message) for e in later] == [("USER_KILLED", "stop")]
    assert later[0].id > first[-1].id and newer == later[0].id
    # A cursor in the middle: the rest, not what came before it.
    middle = first[1].id
    rest, _ = _read_all(backend, middle)
    assert [e.id for e in rest] == [e.id for e in first[2:] + later]


def test_pages_are_bounded_by_the_limit_and_add_up(backend: Backend) -> None:
    _jobs(backend, "x", "x", "x")  # 4 events each (created .. preprocessed)
    whole, _ = _read_all(backend)
    assert len(whole) == 12
    page = backend.events_since(0, 5)
    assert len(page.events) == 5 and page.more and page.cursor == page.events[-1].id
    paged, _ = _read_all(backend, limit=5)
    assert paged == whole
    one, _ = _read_all(backend, limit=1)
    assert one == whole


def test_a_workflow_filter_skips_others_and_moves_the_cursor_past_them(backend: Backend) -> None:
    a, b, c = _jobs(backend, "x", "y", "x")
    mine, cursor = _read_all(backend, workflow="x")
    assert {e.job_id for e in mine} == {a, c} and {e.workflow for e in mine} == {"x"}
    assert _by_job(mine) == _histories(backend, [a, c])
    assert cursor == backend.change_marker()  # past y's events too
    backend.set_state(b, S.USER_KILLED)
    page = backend.events_since(cursor, 10, "x")
    assert page.events == [] and page.cursor == backend.change_marker() and not page.more
    paged, _ = _read_all(backend, limit=3, workflow="x")
    assert paged == mine
    assert _read_all(backend, workflow="none")[0] == []


@pytest.mark.parametrize("limit", [0, -1, MAX_EVENT_PAGE + 1])
def test_a_limit_out_of_bounds_is_refused(backend: Backend, limit: int) -> None:
    with pytest.raises(ValidationError, match="limit"):
        backend.events_since(0, limit)


def test_a_cursor_beyond_the_newest_falls_back_to_it(backend: Backend) -> None:
    (a,) = _jobs(backend, "x")
    newest = backend.change_marker()
    page = backend.events_since(newest + 1000, 10)
    assert (page.events, page.cursor) == ([], newest)
    assert backend.events_since(MAX_EVENT_ID, 10).cursor == newest
    assert backend.events_since(-5, 10).events == backend.events_since(0, 10).events
    backend.set_state(a, S.USER_KILLED)
    assert [e.to_state for e in backend.events_since(page.cursor, 10).events] == ["USER_KILLED"]


def test_events_of_deleted_jobs_are_gone_and_nothing_later_is_skipped(backend: Backend) -> None:
    a, b = _jobs(backend, "x", "x")
    _, before = _read_all(backend)
    assert before == backend.change_marker()
    backend.delete_jobs(JobQuery(clauses=[clause_from_kwargs({"job_id": b})]))
    events, cursor = _read_all(backend)
    assert {e.job_id for e in events} == {a}
    assert cursor <= before
    backend.set_state(a, S.USER_KILLED, "after the delete")
    later, _ = _read_all(backend, cursor)
    assert [e.message for e in later] == ["after the delete"]
    # Not asserted: a cursor held from before the delete. SQLite gives the ids of the newest
    # events out again once their jobs are gone, so a reader resuming after such an id skips
    # the events that took it (docs/server.md, "Limits"); PostgreSQL and the fake never do.


def test_nothing_is_missed_or_repeated_while_many_writers_commit(backend: Backend) -> None:
    """Writers in threads (out of id order on PostgreSQL) while a reader pages along."""
    backend.create_app(AppCreate(name="A", executable="true"))
    made: list[str] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(8):
                specs = [JobCreate(name=f"{n}{i}{k}", workflow="w", application="A") for k in "abc"]
                jobs = backend.create_jobs(specs)
                with lock:
                    made.extend(j.job_id for j in jobs)
                backend.set_state(jobs[0].job_id, S.USER_KILLED, f"kill {n}-{i}")
                backend.note_jobs([jobs[1].job_id], f"note {n}-{i}")
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    seen: list[StreamEvent] = []
    cursor = 0
    while any(t.is_alive() for t in threads):
        page = backend.events_since(cursor, 7)
        seen += page.events
        cursor = page.cursor
    for t in threads:
        t.join()
    assert not failures, failures
    rest, _ = _read_all(backend, cursor, limit=7)
    seen += rest
    ids = [e.id for e in seen]
    assert ids == sorted(set(ids)), "an event repeated or out of order"
    assert _by_job(seen) == _histories(backend, made)
    assert len(seen) == sum(len(backend.history(j)) for j in made)
