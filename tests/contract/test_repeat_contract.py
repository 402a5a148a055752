"""Every call can be sent twice with the effect of once; claims give only jobs that fit.

Runs on every backend (SQLite, PostgreSQL, and the in-memory one of balsam.testing).
"""

from __future__ import annotations

import uuid

import pytest

from balsam.backends.base import Backend
from balsam.domain.states import JobState
from balsam.errors import AlreadyExists, NotFound
from balsam.schemas import (
    AppCreate,
    ClaimRequest,
    JobCreate,
    JobQuery,
    RefusalCode,
    StateUpdate,
    UpdateOutcome,
)
from balsam.schemas.queries import clause_from_kwargs

S = JobState


@pytest.fixture
def app(backend: Backend) -> str:
    backend.create_app(AppCreate(name="A", executable="true"))
    backend.create_app(AppCreate(name="Post", executable="true", postprocess="true"))
    backend.create_app(AppCreate(name="Pre", executable="true", preprocess="true"))
    return "A"


def spec(name: str, app: str = "A", **fields: object) -> JobCreate:
    return JobCreate(name=name, workflow="w", application=app, **fields)  # type: ignore[arg-type]


def ids() -> str:
    return str(uuid.uuid4())


def history(backend: Backend, job_id: str) -> list[tuple[str, str]]:
    return [(e.from_state, e.to_state) for e in backend.history(job_id)]


def test_creating_jobs_with_chosen_ids_twice_creates_them_once(backend: Backend, app: str) -> None:
    parent, child = ids(), ids()
    specs = [spec("p", job_id=parent), spec("c", job_id=child, parents=[parent], input_files="")]
    first = backend.create_jobs(specs)
    again = backend.create_jobs(specs)
    assert [j.job_id for j in first] == [parent, child] == [j.job_id for j in again]
    assert [j.state for j in again] == [S.PREPROCESSED, S.AWAITING_PARENTS]
    assert backend.count_jobs(JobQuery()) == 2
    assert len(backend.history(parent)) == 4


def test_a_call_whose_ids_are_partly_taken_is_refused_whole(backend: Backend, app: str) -> None:
    taken = ids()
    backend.create_jobs([spec("x", job_id=taken)])
    with pytest.raises(AlreadyExists, match="exist already"):
        backend.create_jobs([spec("y", job_id=ids()), spec("x", job_id=taken)])
    with pytest.raises(AlreadyExists):
        backend.create_jobs([spec("x", job_id=taken), spec("z", job_id=ids())])
    assert backend.count_jobs(JobQuery()) == 1


def test_bulk_create_streams_and_returns_states_in_order(backend: Backend, app: str) -> None:
    chosen = [ids() for _ in range(5)]

    def specs() -> object:
        yield spec("root", job_id=chosen[0])
        for i in range(1, 5):
            yield spec(f"c{i}", job_id=chosen[i], parents=[chosen[i - 1]], input_files="")

    made = backend.bulk_create_jobs(specs())  # type: ignore[arg-type]
    assert made.job_ids == chosen and not made.repeated
    assert made.states == [S.PREPROCESSED] + [S.AWAITING_PARENTS] * 4
    again = backend.bulk_create_jobs(specs())  # type: ignore[arg-type]
    assert again.repeated and again.job_ids == chosen and again.states == made.states
    assert backend.count_jobs(JobQuery()) == 5
    assert backend.get_job(chosen[4]).parents == [chosen[3]]


def test_a_state_update_sent_twice_is_applied_once(backend: Backend, app: str) -> None:
    (job,) = backend.create_jobs([spec("j")])
    sess = backend.open_session("t", "h", 1)
    backend.claim_jobs(sess.id, ClaimRequest(claim_seq=1))
    batch = [
        StateUpdate(job_id=job.job_id, state=S.RUNNING, seq=2, from_state=S.PREPROCESSED),
        StateUpdate(job_id=job.job_id, state=S.RUN_DONE, seq=3, from_state=S.RUNNING, release=True),
    ]
    first = backend.record_updates(sess.id, batch)
    assert [r.outcome for r in first] == [UpdateOutcome.APPLIED] * 2
    assert [(r.state, r.held) for r in first] == [(S.RUNNING, True), (S.JOB_FINISHED, False)]
    again = backend.record_updates(sess.id, batch)
    assert [r.outcome for r in again] == [UpdateOutcome.DUPLICATE] * 2
    assert all(r.ok and r.state is S.JOB_FINISHED and not r.held for r in again)
    assert history(backend, job.job_id).count(("PREPROCESSED", "RUNNING")) == 1
    assert backend.get_job(job.job_id).state is S.JOB_FINISHED


def test_a_repeat_with_new_updates_applies_only_the_new_ones(backend: Backend, app: str) -> None:
    (job,) = backend.create_jobs([spec("j")])
    sess = backend.open_session("t", "h", 1)
    backend.claim_jobs(sess.id, ClaimRequest(claim_seq=1))
    running = StateUpdate(job_id=job.job_id, state=S.RUNNING, seq=2)
    backend.record_updates(sess.id, [running])
    done = StateUpdate(job_id=job.job_id, state=S.RUN_DONE, seq=3, release=True)
    results = backend.record_updates(sess.id, [running, done])
    assert [r.outcome for r in results] == [UpdateOutcome.DUPLICATE, UpdateOutcome.APPLIED]
    assert backend.get_job(job.job_id).state is S.JOB_FINISHED


def test_an_update_from_a_state_the_job_left_is_refused_with_where_it_is(
    backend: Backend, app: str
) -> None:
    (job,) = backend.create_jobs([spec("j", app="Post", post_error_handler=True)])
    sess = backend.open_session("t", "h", 1)
    backend.claim_jobs(sess.id, ClaimRequest())
    backend.record_updates(sess.id, [StateUpdate(job_id=job.job_id, state=S.RUNNING)])
    backend.record_updates(sess.id, [StateUpdate(job_id=job.job_id, state=S.RUN_ERROR)])
    # The job's error handler asks for a rerun, through the API (the hold is kept).
    backend.set_state(job.job_id, S.RESTART_READY, "the handler wants a rerun")
    (result,) = backend.record_updates(
        sess.id, [StateUpdate(job_id=job.job_id, state=S.POSTPROCESSED, from_state=S.RUN_ERROR)]
    )
    assert result.outcome is UpdateOutcome.REFUSED
    assert result.code is RefusalCode.STATE_CHANGED
    assert (result.state, result.held) == (S.RESTART_READY, True)
    assert backend.get_job(job.job_id).state is S.RESTART_READY


def test_updates_to_unknown_jobs_are_refused_not_found(backend: Backend, app: str) -> None:
    sess = backend.open_session("t", "h", 1)
    (result,) = backend.record_updates(sess.id, [StateUpdate(job_id=ids(), state=S.RUNNING)])
    assert result.code is RefusalCode.NOT_FOUND and result.state is None


def test_a_claim_sent_twice_returns_what_the_first_took(backend: Backend, app: str) -> None:
    backend.create_jobs([spec(f"j{i}") for i in range(5)])
    sess = backend.open_session("t", "h", 1)
    first = backend.claim_jobs(sess.id, ClaimRequest(limit=3, claim_seq=7))
    again = backend.claim_jobs(sess.id, ClaimRequest(limit=3, claim_seq=7))
    assert len(first) == 3
    assert {j.job_id for j in again} == {j.job_id for j in first}
    rest = backend.claim_jobs(sess.id, ClaimRequest(limit=3, claim_seq=8))
    assert len(rest) == 2 and not {j.job_id for j in rest} & {j.job_id for j in first}


def test_a_session_opened_twice_with_one_key_is_one_session(backend: Backend, app: str) -> None:
    first = backend.open_session("t", "h", 1, client_key="k-1")
    again = backend.open_session("t", "h", 1, client_key="k-1")
    other = backend.open_session("t", "h", 1, client_key="k-2")
    assert first.id == again.id != other.id
    assert len(backend.list_sessions()) == 2


def test_closing_a_session_twice_is_harmless(backend: Backend, app: str) -> None:
    (job,) = backend.create_jobs([spec("j")])
    sess = backend.open_session("t", "h", 1)
    backend.claim_jobs(sess.id, ClaimRequest())
    backend.close_session(sess.id)
    backend.close_session(sess.id)
    backend.release_jobs(sess.id, [job.job_id])
    assert backend.get_job(job.job_id).session_id is None
    assert backend.list_sessions() == []


def test_claims_give_only_jobs_that_fit_the_nodes(backend: Backend, app: str) -> None:
    backend.create_jobs(
        [
            spec("gpu", gpus_per_rank=2),
            spec("wide", ranks_per_node=8),
            spec("small"),
        ]
    )
    sess = backend.open_session("t", "h", 1)
    cpu_only = ClaimRequest(limit=10, cpus_per_node=4, gpus_per_node=0)
    assert [j.name for j in backend.claim_jobs(sess.id, cpu_only)] == ["small"]
    big = ClaimRequest(limit=10, cpus_per_node=8, gpus_per_node=2)
    assert sorted(j.name for j in backend.claim_jobs(sess.id, big)) == ["gpu", "wide"]


def test_a_gpu_launcher_takes_gpu_jobs_first(backend: Backend, app: str) -> None:
    backend.create_jobs([spec("cpu"), spec("one", gpus_per_rank=1), spec("two", gpus_per_rank=2)])
    sess = backend.open_session("t", "h", 1)
    taken = backend.claim_jobs(sess.id, ClaimRequest(limit=2, cpus_per_node=4, gpus_per_node=4))
    assert [j.name for j in taken] == ["two", "one"]


def test_changed_resources_change_what_fits(backend: Backend, app: str) -> None:
    (job,) = backend.create_jobs([spec("j")])
    query = JobQuery(clauses=[clause_from_kwargs({"job_id": job.job_id})])
    assert backend.update_jobs(query, {"gpus_per_rank": 1}) == 1
    sess = backend.open_session("t", "h", 1)
    assert backend.claim_jobs(sess.id, ClaimRequest(gpus_per_node=0, cpus_per_node=2)) == []
    taken = backend.claim_jobs(sess.id, ClaimRequest(gpus_per_node=1, cpus_per_node=2))
    assert [j.job_id for j in taken] == [job.job_id]


def test_jobs_left_in_a_processing_state_are_claimed_for_their_step(
    backend: Backend, app: str
) -> None:
    (job,) = backend.create_jobs([spec("j", app="Post")])
    dying = backend.open_session("t", "h", 1)
    backend.claim_jobs(dying.id, ClaimRequest())
    backend.record_updates(dying.id, [StateUpdate(job_id=job.job_id, state=S.RUNNING)])
    backend.record_updates(dying.id, [StateUpdate(job_id=job.job_id, state=S.RUN_DONE)])
    backend.close_session(dying.id)
    assert backend.get_job(job.job_id).state is S.RUN_DONE
    sess = backend.open_session("u", "h", 2)
    assert backend.claim_jobs(sess.id, ClaimRequest(limit=5)) == []
    taken = backend.claim_jobs(sess.id, ClaimRequest(limit=0, processing_limit=5))
    assert [(j.job_id, j.state, j.session_id) for j in taken] == [(job.job_id, S.RUN_DONE, sess.id)]


def test_a_claim_may_ask_for_some_runnable_states_only(backend: Backend, app: str) -> None:
    """Launchers that leave preprocessing to the service take only jobs ready to run."""
    ready, pre = backend.create_jobs([spec("ready"), spec("pre", app="Pre")])
    assert (ready.state, pre.state) == (S.PREPROCESSED, S.STAGED_IN)
    sess = backend.open_session("t", "h", 1)
    runs = ClaimRequest(limit=5, states=[S.PREPROCESSED, S.RESTART_READY])
    assert [j.job_id for j in backend.claim_jobs(sess.id, runs)] == [ready.job_id]
    assert backend.claim_jobs(sess.id, runs) == []
    steps = ClaimRequest(limit=5, states=[S.READY, S.STAGED_IN])
    assert [j.job_id for j in backend.claim_jobs(sess.id, steps)] == [pre.job_id]


def test_a_release_repeated_after_the_job_was_claimed_again_leaves_it_held(
    backend: Backend, app: str
) -> None:
    (job,) = backend.create_jobs([spec("j")])
    sess = backend.open_session("t", "h", 1)
    backend.claim_jobs(sess.id, ClaimRequest(claim_seq=1))
    backend.release_jobs(sess.id, [job.job_id], seq=2)
    assert backend.get_job(job.job_id).session_id is None
    assert len(backend.claim_jobs(sess.id, ClaimRequest(claim_seq=3))) == 1
    # The first release's answer was lost; its repeat arrives now.
    backend.release_jobs(sess.id, [job.job_id], seq=2)
    assert backend.get_job(job.job_id).session_id == sess.id
    backend.release_jobs(sess.id, [job.job_id], seq=4)
    assert backend.get_job(job.job_id).session_id is None


def test_a_closed_sessions_id_is_never_given_to_another(backend: Backend, app: str) -> None:
    first = backend.open_session("t", "h", 1)
    backend.close_session(first.id)
    second = backend.open_session("t", "h", 2)
    assert second.id != first.id
    with pytest.raises(NotFound):
        backend.heartbeat(first.id)
    assert [s.id for s in backend.list_sessions()] == [second.id]


def test_updates_and_a_claim_in_one_call_free_and_take_the_children(
    backend: Backend, app: str
) -> None:
    parent, child = ids(), ids()
    backend.create_jobs([spec("p", job_id=parent), spec("c", job_id=child, parents=[parent])])
    sess = backend.open_session("t", "host", 1)
    (claimed,) = backend.claim_jobs(sess.id, ClaimRequest(limit=5, claim_seq=1))
    assert claimed.job_id == parent
    updates = [
        StateUpdate(job_id=parent, state=S.RUNNING, seq=2),
        StateUpdate(job_id=parent, state=S.RUN_DONE, return_code=0, seq=3, release=True),
    ]
    first = backend.record_and_claim(sess.id, updates, ClaimRequest(limit=5, claim_seq=4))
    assert [r.outcome for r in first.results] == [UpdateOutcome.APPLIED] * 2
    assert first.results[-1].state is S.JOB_FINISHED
    # The child was freed by the same call's updates, and claimed by its claim.
    assert [(j.job_id, j.state) for j in first.jobs] == [(child, S.READY)]
    again = backend.record_and_claim(sess.id, updates, ClaimRequest(limit=5, claim_seq=4))
    assert [r.outcome for r in again.results] == [UpdateOutcome.DUPLICATE] * 2
    assert [j.job_id for j in again.jobs] == [child]
    assert len([h for h in history(backend, parent) if h[1] == "RUN_DONE"]) == 1


def test_updates_and_a_claim_of_an_ended_session_do_nothing(backend: Backend, app: str) -> None:
    job = ids()
    backend.create_jobs([spec("j", job_id=job), spec("other")])
    sess = backend.open_session("t", "host", 1)
    backend.claim_jobs(sess.id, ClaimRequest(limit=1, claim_seq=1))
    backend.close_session(sess.id)
    with pytest.raises(NotFound):
        backend.record_and_claim(
            sess.id,
            [StateUpdate(job_id=job, state=S.RUNNING, seq=2)],
            ClaimRequest(limit=5, claim_seq=3),
        )
    assert {j.name: (j.state, j.session_id) for j in backend.query_jobs(JobQuery())} == {
        "j": (S.PREPROCESSED, None),
        "other": (S.PREPROCESSED, None),
    }
