"""Jobs know who made them, and a submitter changes only its own: kill, field updates and
dependencies of another user's jobs are 403 (with an audit line) and change nothing; an owner
may change any job. Reads stay open to every role, and a launcher's own calls (sessions, notes,
state changes of the jobs it runs) are not limited to its user's jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from balsam.backends.local import LocalBackend
from balsam.backends.remote import RemoteBackend
from balsam.domain.states import JobState
from balsam.errors import AccessDenied
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import JobCreate
from balsam.schemas.queries import JobQuery, clause_from_kwargs
from balsam.server.auth import Role
from balsam.store.engine import make_engine
from balsam.store.migrate import upgrade
from serverkit import in_process, owner_token, remote


@dataclass
class Team:
    """One database served to alice and bob (submitters) and carol (its owner)."""

    local: LocalBackend
    alice: RemoteBackend
    bob: RemoteBackend
    carol: RemoteBackend


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    engine = make_engine(f"sqlite:///{tmp_path / 'site.db'}")
    upgrade(engine)
    local = LocalBackend(engine)
    local.create_app(AppCreate(name="hello", executable="echo"))
    with in_process({"site": local}, tmp_path / "state") as (client, auth):
        roles = {"alice": Role.SUBMITTER, "bob": Role.SUBMITTER, "carol": Role.OWNER}
        users = {
            user: remote(client, "http://testserver", "site", owner_token(auth, user, "site", role))
            for user, role in roles.items()
        }
        yield Team(local, users["alice"], users["bob"], users["carol"])
    local.close()


def _job(name: str, **fields: object) -> JobCreate:
    return JobCreate(name=name, application="hello", **fields)  # type: ignore[arg-type]


def _denials(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "balsam.server.audit"]


def test_the_server_records_the_caller_as_the_creator_whatever_the_request_says(
    team: Team,
) -> None:
    (one,) = team.alice.create_jobs([_job("one", created_by="bob")])
    made = team.alice.bulk_create_jobs([_job(f"b{i}", created_by="carol") for i in range(3)])
    assert one.created_by == "alice"
    for job_id in [one.job_id, *made.job_ids]:
        assert team.local.get_job(job_id).created_by == "alice"
        assert team.bob.get_job(job_id).created_by == "alice"  # reads are not limited


def test_a_submitter_cannot_kill_another_users_job_and_the_job_is_untouched(
    team: Team, caplog: pytest.LogCaptureFixture
) -> None:
    (job,) = team.alice.create_jobs([_job("mine")])
    with (
        caplog.at_level(logging.WARNING, logger="balsam.server.audit"),
        pytest.raises(AccessDenied, match="not made by you"),
    ):
        team.bob.kill_jobs(job.job_id)
    (line,) = _denials(caplog)
    assert "user=bob" in line and "db=site" in line and "/kill" in line
    assert team.local.get_job(job.job_id).state is not JobState.USER_KILLED
    assert team.alice.kill_jobs(job.job_id) == [job.job_id]
    assert team.local.get_job(job.job_id).state is JobState.USER_KILLED


def test_an_owner_may_kill_any_job_also_one_made_on_the_database_directly(team: Team) -> None:
    (by_alice,) = team.alice.create_jobs([_job("a")])
    (direct,) = team.local.create_jobs([_job("direct")])
    assert direct.created_by is None
    with pytest.raises(AccessDenied):
        team.alice.kill_jobs(direct.job_id)
    assert team.carol.kill_jobs(by_alice.job_id) == [by_alice.job_id]
    assert team.carol.kill_jobs(direct.job_id) == [direct.job_id]


def test_an_update_matching_another_users_jobs_is_refused_whole(team: Team) -> None:
    team.alice.create_jobs([_job("a1", workflow="shared"), _job("a2", workflow="shared")])
    team.bob.create_jobs([_job("b1", workflow="shared")])
    shared = JobQuery(clauses=[clause_from_kwargs({"workflow": "shared"})])
    with pytest.raises(AccessDenied):
        team.bob.update_jobs(shared, {"num_nodes": 4})
    assert {j.num_nodes for j in team.local.query_jobs(shared)} == {1}  # nothing changed
    bobs = JobQuery(clauses=[clause_from_kwargs({"workflow": "shared", "name": "b1"})])
    assert team.bob.update_jobs(bobs, {"num_nodes": 4}) == 1
    assert team.carol.update_jobs(shared, {"wall_time_minutes": 9}) == 3


def test_a_submitter_adds_and_removes_dependencies_only_of_its_own_children(team: Team) -> None:
    (parent,) = team.alice.create_jobs([_job("parent")])
    (child,) = team.alice.create_jobs([_job("child")])
    (bobs,) = team.bob.create_jobs([_job("bobs")])
    with pytest.raises(AccessDenied):
        team.bob.add_dependency(bobs.job_id, child.job_id)
    # A child of one's own may wait for anyone's job: a parent is only read.
    team.bob.add_dependency(parent.job_id, bobs.job_id)
    assert bobs.job_id in team.local.children_of(parent.job_id)
    team.alice.add_dependency(parent.job_id, child.job_id)
    with pytest.raises(AccessDenied):
        team.bob.remove_dependency(parent.job_id, child.job_id)
    assert set(team.local.children_of(parent.job_id)) == {child.job_id, bobs.job_id}


def test_launcher_calls_of_a_submitter_reach_every_users_jobs(team: Team) -> None:
    """A submitter may run launchers, and a launcher runs whatever is runnable: its notes
    and state changes (a job no node can run is failed) are not limited to its own jobs."""
    (job,) = team.alice.create_jobs([_job("anyone")])
    assert team.bob.note_jobs([job.job_id], "waits: no GPU here") == 1
    assert team.bob.set_state(job.job_id, JobState.FAILED, "can never run").state is JobState.FAILED
