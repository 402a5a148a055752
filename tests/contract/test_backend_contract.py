"""The Backend contract, run on every backend (SQLite and PostgreSQL today, HTTP later)."""

from __future__ import annotations

import pytest

from balsam.backends.base import Backend
from balsam.domain.states import JobState
from balsam.errors import (
    AlreadyExists,
    Ambiguous,
    DependencyError,
    InvalidTransition,
    NotFound,
    ValidationError,
)
from balsam.schemas import (
    AppCreate,
    AppUpdate,
    ClaimRequest,
    JobCreate,
    JobQuery,
    RefusalCode,
    StateUpdate,
    UpdateOutcome,
    UpdateResult,
)
from balsam.schemas.queries import clause_from_kwargs

S = JobState


def q(**kwargs: object) -> JobQuery:
    return JobQuery(clauses=[clause_from_kwargs(kwargs)])


def states(backend: Backend) -> dict[str, str]:
    return {j.name: j.state.value for j in backend.query_jobs(JobQuery())}


@pytest.fixture
def app(backend: Backend) -> str:
    backend.create_app(AppCreate(name="SayHello", executable="echo hello,"))
    return "SayHello"


def job(name: str, app: str = "SayHello", **kw: object) -> JobCreate:
    return JobCreate(name=name, workflow="test", application=app, **kw)  # type: ignore[arg-type]


def refused(results: list[UpdateResult]) -> list[UpdateResult]:
    """The updates that were not applied (now or before)."""
    return [r for r in results if not r.ok]


def run_to(backend: Backend, job_id: str, final: JobState, rc: int = 0) -> list[UpdateResult]:
    """Claim a job as a launcher would and report it running, then ``final``; the refusals."""
    sess = backend.open_session("t", "host", 1)
    claimed = backend.claim_jobs(sess.id, ClaimRequest(job_ids=[job_id]))
    assert [c.job_id for c in claimed] == [job_id]
    updates = [
        StateUpdate(job_id=job_id, state=S.RUNNING),
        StateUpdate(job_id=job_id, state=final, return_code=rc, message="tail", release=True),
    ]
    return refused(backend.record_updates(sess.id, updates))


def test_app_names_are_unique(backend: Backend, app: str) -> None:
    with pytest.raises(AlreadyExists, match="SayHello"):
        backend.create_app(AppCreate(name=app, executable="true"))
    assert [a.name for a in backend.list_apps()] == [app]


def test_an_apps_container_is_stored_changed_and_cleared(backend: Backend, app: str) -> None:
    made = backend.create_app(AppCreate(name="InImage", executable="sim", container="img:1"))
    assert made.container == "img:1"
    assert {a.name: a.container for a in backend.list_apps()} == {app: "", "InImage": "img:1"}
    changed = backend.update_app("InImage", AppUpdate(container="docker://x/y:2"))
    assert changed.container == "docker://x/y:2"
    assert backend.update_app("InImage", AppUpdate(description="d")).container == "docker://x/y:2"
    assert backend.update_app("InImage", AppUpdate(container="")).container == ""


def test_new_job_fast_forwards_and_records_events(backend: Backend, app: str) -> None:
    (out,) = backend.create_jobs([job("hi", args="world!")])
    assert out.state is S.PREPROCESSED
    assert out.working_directory == f"data/test/hi_{out.job_id[:8]}"
    hops = [(e.from_state, e.to_state) for e in backend.history(out.job_id)]
    assert hops == [
        ("", "CREATED"),
        ("CREATED", "READY"),
        ("READY", "STAGED_IN"),
        ("STAGED_IN", "PREPROCESSED"),
    ]


def test_unknown_app_creates_nothing(backend: Backend, app: str) -> None:
    with pytest.raises(NotFound, match="Nope"):
        backend.create_jobs([job("ok"), job("bad", app="Nope")])
    assert backend.count_jobs(JobQuery()) == 0


def test_unknown_parent_creates_nothing(backend: Backend, app: str) -> None:
    with pytest.raises(NotFound, match="parent"):
        backend.create_jobs([job("x", parents=["0" * 36])])
    assert backend.count_jobs(JobQuery()) == 0


def test_finished_run_reaches_job_finished_and_frees_child(backend: Backend, app: str) -> None:
    (parent,) = backend.create_jobs([job("p")])
    (child,) = backend.create_jobs([job("c", parents=[parent.job_id], input_files="")])
    assert child.state is S.AWAITING_PARENTS
    assert run_to(backend, parent.job_id, S.RUN_DONE) == []
    assert states(backend) == {"p": "JOB_FINISHED", "c": "PREPROCESSED"}
    assert backend.get_job(parent.job_id).return_code == 0


def test_a_parent_frees_every_child_of_a_large_fan_out(backend: Backend, app: str) -> None:
    # More children than one look-up chunk (500), one of them also waiting for a second parent.
    (parent,) = backend.create_jobs([job("p")])
    (other,) = backend.create_jobs([job("o")])
    backend.create_jobs([job(f"c{i}", parents=[parent.job_id], input_files="") for i in range(600)])
    backend.create_jobs([job("both", parents=[parent.job_id, other.job_id], input_files="")])
    assert run_to(backend, parent.job_id, S.RUN_DONE) == []
    after = states(backend)
    assert {after[f"c{i}"] for i in range(600)} == {"PREPROCESSED"}
    assert after["both"] == "AWAITING_PARENTS"
    assert run_to(backend, other.job_id, S.RUN_DONE) == []
    assert states(backend)["both"] == "PREPROCESSED"


def test_a_failed_parent_fails_a_diamond_below_it(backend: Backend, app: str) -> None:
    (top,) = backend.create_jobs([job("top")])
    (left,) = backend.create_jobs([job("left", parents=[top.job_id])])
    (right,) = backend.create_jobs([job("right", parents=[top.job_id])])
    (bottom,) = backend.create_jobs([job("bottom", parents=[left.job_id, right.job_id])])
    run_to(backend, top.job_id, S.RUN_ERROR, rc=1)
    assert states(backend) == {
        "top": "FAILED",
        "left": "FAILED",
        "right": "FAILED",
        "bottom": "FAILED",
    }
    assert len([e for e in backend.history(bottom.job_id) if e.to_state == "FAILED"]) == 1


def test_child_with_inputs_from_parent_stops_at_ready_for_stage_in(
    backend: Backend, app: str
) -> None:
    (parent,) = backend.create_jobs([job("p")])
    (child,) = backend.create_jobs([job("c", parents=[parent.job_id])])
    run_to(backend, parent.job_id, S.RUN_DONE)
    assert backend.get_job(child.job_id).state is S.READY


def test_error_without_retries_fails_and_fails_children(backend: Backend, app: str) -> None:
    (parent,) = backend.create_jobs([job("p")])
    (child,) = backend.create_jobs([job("c", parents=[parent.job_id])])
    (grandchild,) = backend.create_jobs([job("g", parents=[child.job_id])])
    run_to(backend, parent.job_id, S.RUN_ERROR, rc=3)
    assert states(backend) == {"p": "FAILED", "c": "FAILED", "g": "FAILED"}
    hist = backend.history(parent.job_id)
    assert ("RUNNING", "RUN_ERROR", "tail") in [(e.from_state, e.to_state, e.message) for e in hist]
    assert "parent" in backend.history(grandchild.job_id)[-1].message
    assert backend.get_job(parent.job_id).error_count == 1


def test_error_with_retries_goes_to_restart_ready(backend: Backend, app: str) -> None:
    (j,) = backend.create_jobs([job("r", max_error_retries=1)])
    run_to(backend, j.job_id, S.RUN_ERROR, rc=1)
    assert backend.get_job(j.job_id).state is S.RESTART_READY
    run_to(backend, j.job_id, S.RUN_ERROR, rc=1)
    assert backend.get_job(j.job_id).state is S.FAILED


def test_invalid_launcher_update_is_rejected_not_applied(backend: Backend, app: str) -> None:
    (j,) = backend.create_jobs([job("x")])
    sess = backend.open_session("t", "h", 1)
    backend.claim_jobs(sess.id, ClaimRequest())
    finished = StateUpdate(job_id=j.job_id, state=S.JOB_FINISHED)
    (result,) = backend.record_updates(sess.id, [finished])
    assert result.outcome is UpdateOutcome.REFUSED
    assert result.code is RefusalCode.INVALID_TRANSITION
    assert "PREPROCESSED to JOB_FINISHED" in result.reason
    assert (result.state, result.held) == (S.PREPROCESSED, True)
    assert backend.get_job(j.job_id).state is S.PREPROCESSED


def test_claims_never_overlap(backend: Backend, app: str) -> None:
    backend.create_jobs([job(f"j{i}") for i in range(10)])
    s1 = backend.open_session("a", "h", 1)
    s2 = backend.open_session("b", "h", 2)
    first = backend.claim_jobs(s1.id, ClaimRequest(limit=6))
    second = backend.claim_jobs(s2.id, ClaimRequest(limit=6))
    assert len(first) == 6 and len(second) == 4
    assert not {j.job_id for j in first} & {j.job_id for j in second}
    assert backend.claim_jobs(s2.id, ClaimRequest()) == []


def test_claim_respects_workflow_and_size(backend: Backend, app: str) -> None:
    backend.create_jobs(
        [
            job("small"),
            job("big", num_nodes=4),
            JobCreate(name="other", workflow="wf2", application=app),
        ]
    )
    sess = backend.open_session("a", "h", 1)
    got = backend.claim_jobs(sess.id, ClaimRequest(workflows=["test"], max_nodes=2))
    assert [j.name for j in got] == ["small"]


def test_closing_a_session_hands_running_jobs_back(backend: Backend, app: str) -> None:
    (j,) = backend.create_jobs([job("x")])
    sess = backend.open_session("a", "h", 1)
    backend.claim_jobs(sess.id, ClaimRequest())
    backend.record_updates(sess.id, [StateUpdate(job_id=j.job_id, state=S.RUNNING)])
    backend.close_session(sess.id)
    after = backend.get_job(j.job_id)
    assert after.state is S.RESTART_READY and after.session_id is None and after.lost_count == 1


def test_expired_lease_recovers_jobs(backend: Backend, app: str) -> None:
    (j,) = backend.create_jobs([job("x")])
    sess = backend.open_session("a", "h", 1)
    backend.claim_jobs(sess.id, ClaimRequest())
    backend.record_updates(sess.id, [StateUpdate(job_id=j.job_id, state=S.RUNNING)])
    assert backend.expire_sessions(lease_seconds=3600) == []
    assert backend.expire_sessions(lease_seconds=0) == [sess.id]
    assert backend.get_job(j.job_id).state is S.RESTART_READY
    with pytest.raises(NotFound, match="expired"):
        backend.heartbeat(sess.id)


def test_sessions_named_dead_are_recovered_at_once(backend: Backend, app: str) -> None:
    (j, k) = backend.create_jobs([job("x"), job("y")])
    dead = backend.open_session("a", "h", 1)
    alive = backend.open_session("b", "h", 2)
    backend.claim_jobs(dead.id, ClaimRequest(job_ids=[j.job_id]))
    backend.claim_jobs(alive.id, ClaimRequest(job_ids=[k.job_id]))
    for sess, jid in ((dead, j.job_id), (alive, k.job_id)):
        backend.record_updates(sess.id, [StateUpdate(job_id=jid, state=S.RUNNING)])
    assert [s.id for s in backend.list_sessions()] == [dead.id, alive.id]
    assert backend.expire_sessions(lease_seconds=3600, dead=[dead.id, 999]) == [dead.id]
    assert [s.id for s in backend.list_sessions()] == [alive.id]
    recovered = backend.get_job(j.job_id)
    assert recovered.state is S.RESTART_READY and recovered.lost_count == 1
    assert recovered.session_id is None
    assert backend.get_job(k.job_id).state is S.RUNNING
    events = backend.history(j.job_id)
    assert events[-1].message == "launcher lost (its process is gone)"


def test_lost_runs_are_bounded(backend: Backend, app: str) -> None:
    (j,) = backend.create_jobs([job("x", max_lost_retries=1)])
    for attempt in (1, 2):
        sess = backend.open_session("a", "h", attempt)
        assert [c.job_id for c in backend.claim_jobs(sess.id, ClaimRequest())] == [j.job_id]
        backend.record_updates(sess.id, [StateUpdate(job_id=j.job_id, state=S.RUNNING)])
        backend.expire_sessions(lease_seconds=3600, dead=[sess.id])
    after = backend.get_job(j.job_id)
    assert after.state is S.FAILED and after.lost_count == 2
    assert "gave up after 2 runs lost" in backend.history(j.job_id)[-1].message


def test_killed_jobs_are_reported_without_renewing_the_lease(backend: Backend, app: str) -> None:
    (j,) = backend.create_jobs([job("x")])
    sess = backend.open_session("a", "h", 1)
    backend.claim_jobs(sess.id, ClaimRequest())
    backend.record_updates(sess.id, [StateUpdate(job_id=j.job_id, state=S.RUNNING)])
    assert backend.ended_held_jobs(sess.id) == []
    before = backend.list_sessions()[0].heartbeat
    backend.kill_jobs(j.job_id)
    assert backend.ended_held_jobs(sess.id) == [j.job_id]
    assert backend.list_sessions()[0].heartbeat == before
    backend.close_session(sess.id)
    with pytest.raises(NotFound, match="expired"):
        backend.ended_held_jobs(sess.id)


def test_kill_running_job_is_reported_by_heartbeat(backend: Backend, app: str) -> None:
    (j,) = backend.create_jobs([job("x")])
    sess = backend.open_session("a", "h", 1)
    backend.claim_jobs(sess.id, ClaimRequest())
    backend.record_updates(sess.id, [StateUpdate(job_id=j.job_id, state=S.RUNNING)])
    assert backend.kill_jobs(j.job_id) == [j.job_id]
    assert backend.heartbeat(sess.id) == [j.job_id]
    backend.release_jobs(sess.id, [j.job_id])
    assert backend.heartbeat(sess.id) == []
    assert backend.get_job(j.job_id).state is S.USER_KILLED


def test_recursive_kill_reaches_descendants(backend: Backend, app: str) -> None:
    (a,) = backend.create_jobs([job("a")])
    (b,) = backend.create_jobs([job("b", parents=[a.job_id])])
    (c,) = backend.create_jobs([job("c", parents=[b.job_id])])
    (d,) = backend.create_jobs([job("d")])
    killed = backend.kill_jobs(a.job_id, recursive=True)
    assert set(killed) == {a.job_id, b.job_id, c.job_id}
    assert backend.get_job(d.job_id).state is S.PREPROCESSED
    with pytest.raises(InvalidTransition, match="already USER_KILLED"):
        backend.kill_jobs(a.job_id)


def test_dependencies_refuse_self_and_cycles(backend: Backend, app: str) -> None:
    a, b, c = backend.create_jobs([job("a"), job("b"), job("c")])
    backend.add_dependency(a.job_id, b.job_id)
    backend.add_dependency(b.job_id, c.job_id)
    with pytest.raises(DependencyError, match="itself"):
        backend.add_dependency(a.job_id, a.job_id)
    with pytest.raises(DependencyError, match="cycle"):
        backend.add_dependency(c.job_id, a.job_id)
    with pytest.raises(AlreadyExists):
        backend.add_dependency(a.job_id, b.job_id)
    assert backend.children_of(a.job_id) == [b.job_id]
    assert backend.get_job(b.job_id).state is S.AWAITING_PARENTS
    assert backend.get_job(c.job_id).state is S.AWAITING_PARENTS


def test_prefix_resolution(backend: Backend, app: str) -> None:
    jobs = backend.create_jobs([job(f"j{i}") for i in range(40)])
    full = jobs[0].job_id
    assert backend.resolve_job_id(full[:12]) == full
    with pytest.raises(NotFound):
        backend.resolve_job_id("zzzz")
    with pytest.raises(Ambiguous):
        backend.resolve_job_id(_shared_prefix([j.job_id for j in jobs]))


def _shared_prefix(ids: list[str]) -> str:
    """A one-character prefix that at least two of ``ids`` share (40 ids, 16 hex digits)."""
    firsts = [i[0] for i in ids]
    return next(c for c in firsts if firsts.count(c) > 1)


def test_queries_with_lookups(backend: Backend, app: str) -> None:
    backend.create_jobs(
        [job("alpha", num_nodes=1), job("Beta", num_nodes=2), job("gamma", num_nodes=3)]
    )
    names = lambda query: sorted(j.name for j in backend.query_jobs(query))  # noqa: E731
    assert names(q(name__icontains="A")) == ["Beta", "alpha", "gamma"]
    assert names(q(name__startswith="a")) == ["alpha"]
    assert names(q(num_nodes__gte=2)) == ["Beta", "gamma"]
    assert names(q(name__in=["alpha", "gamma"])) == ["alpha", "gamma"]
    excl = JobQuery(clauses=[clause_from_kwargs({"name": "alpha"}, negate=True)])
    assert names(excl) == ["Beta", "gamma"]
    ordered = backend.query_jobs(JobQuery(order_by=["-num_nodes"], limit=2))
    assert [j.name for j in ordered] == ["gamma", "Beta"]
    assert backend.count_by_state(JobQuery()) == {"PREPROCESSED": 3}
    with pytest.raises(ValidationError, match="unknown field"):
        backend.query_jobs(q(nosuch=1))


def test_job_shapes_count_the_sizes_of_matching_jobs_largest_first(
    backend: Backend, app: str
) -> None:
    backend.create_jobs(
        [job("a", num_nodes=2, wall_time_minutes=30), job("b", num_nodes=2, wall_time_minutes=30)]
        + [job(f"s{i}", node_packing_count=4) for i in range(3)]
        + [job("killed", num_nodes=8)]
    )
    (killed,) = backend.query_jobs(q(name="killed"))
    backend.kill_jobs(killed.job_id)
    shapes = backend.job_shapes(q(state__in=["PREPROCESSED"]))
    found = [(s.num_nodes, s.node_packing_count, s.wall_time_minutes, s.count) for s in shapes]
    assert found == [(2, 1, 30.0, 2), (1, 4, 1.0, 3)]
    held = backend.job_shapes(q(session_id__isnull=False))
    assert held == []


def test_update_fields_validated(backend: Backend, app: str) -> None:
    (j,) = backend.create_jobs([job("x")])
    assert backend.update_jobs(q(name="x"), {"num_nodes": 4, "args": "--n 2"}) == 1
    assert backend.get_job(j.job_id).num_nodes == 4
    with pytest.raises(ValidationError, match="num_nodes"):
        backend.update_jobs(q(name="x"), {"num_nodes": -1})
    assert backend.get_job(j.job_id).num_nodes == 4


def test_user_state_changes(backend: Backend, app: str) -> None:
    (j,) = backend.create_jobs([job("x")])
    with pytest.raises(InvalidTransition):
        backend.set_state(j.job_id, S.RUNNING)
    run_to(backend, j.job_id, S.RUN_DONE)
    assert backend.set_state(j.job_id, S.READY).state is S.PREPROCESSED


def test_delete_refuses_running_jobs(backend: Backend, app: str) -> None:
    (j, _other) = backend.create_jobs([job("x"), job("y")])
    sess = backend.open_session("a", "h", 1)
    backend.claim_jobs(sess.id, ClaimRequest(job_ids=[j.job_id]))
    backend.record_updates(sess.id, [StateUpdate(job_id=j.job_id, state=S.RUNNING)])
    with pytest.raises(InvalidTransition, match="RUNNING"):
        backend.delete_jobs(JobQuery())
    assert backend.delete_jobs(q(name="y")) == 1
    assert backend.count_jobs(JobQuery()) == 1


def test_delete_honours_limit_and_order(backend: Backend, app: str) -> None:
    backend.create_jobs([job(f"j{i}") for i in range(4)])
    assert backend.delete_jobs(JobQuery(order_by=["name"], limit=1)) == 1
    assert sorted(states(backend)) == ["j1", "j2", "j3"]
    assert backend.update_jobs(JobQuery(order_by=["-name"], limit=2), {"description": "x"}) == 2
    described = {j.name for j in backend.query_jobs(JobQuery()) if j.description == "x"}
    assert described == {"j2", "j3"}


def test_deleting_a_waiting_jobs_last_unfinished_parent_frees_it(
    backend: Backend, app: str
) -> None:
    (parent,) = backend.create_jobs([job("p")])
    (child,) = backend.create_jobs([job("c", parents=[parent.job_id], input_files="")])
    assert child.state is S.AWAITING_PARENTS
    assert backend.delete_jobs(q(job_id=parent.job_id)) == 1
    assert backend.get_job(child.job_id).state is S.PREPROCESSED
    assert backend.get_job(child.job_id).parents == []


def test_a_state_given_as_text_is_taken(backend: Backend, app: str) -> None:
    (j,) = backend.create_jobs([job("x")])
    out = backend.set_state(j.job_id, "FAILED", "given up")  # type: ignore[arg-type]
    assert out.state is S.FAILED
