"""Job query sets of the Python API (``BalsamJob.objects``) on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from balsam.api import use_backend
from balsam.api.context import get_backend
from balsam.backends.local import LocalBackend
from balsam.core.models import BalsamJob
from balsam.domain.states import JobState
from balsam.errors import Ambiguous, InvalidTransition, NotFound, ValidationError
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import StateUpdate
from balsam.schemas.sessions import ClaimRequest

#: (name, workflow, num_nodes, description) of the jobs most tests query.
ROWS = [
    ("alpha", "wf1", 1, "first"),
    ("Beta", "wf1", 2, ""),
    ("gamma_1", "wf2", 3, "50% done"),
    ("gamma_2", "wf2", 4, ""),
]


@pytest.fixture
def api(backend: LocalBackend) -> Iterator[LocalBackend]:
    """The test's backend, injected into the API, with the app the jobs run."""
    backend.create_app(AppCreate(name="SayHello", executable="echo hello,"))
    with use_backend(backend):
        yield backend


@pytest.fixture
def jobs(api: LocalBackend) -> dict[str, BalsamJob]:
    """The four jobs of ROWS, saved; by name."""
    made = [
        BalsamJob(name=n, workflow=w, num_nodes=k, description=d, application="SayHello")
        for n, w, k, d in ROWS
    ]
    BalsamJob.objects.bulk_create(made)
    return {j.name: j for j in made}


def names(query: Any) -> set[str]:
    """Names of the jobs a query set yields."""
    return {j.name for j in query}


LOOKUP_CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"name": "alpha"}, {"alpha"}),
    ({"name__exact": "Beta"}, {"Beta"}),
    ({"name__iexact": "beta"}, {"Beta"}),
    ({"name__contains": "amma"}, {"gamma_1", "gamma_2"}),
    ({"name__contains": "A"}, set()),
    ({"name__icontains": "A"}, {"alpha", "Beta", "gamma_1", "gamma_2"}),
    ({"name__startswith": "gam"}, {"gamma_1", "gamma_2"}),
    ({"name__startswith": "gamma_"}, {"gamma_1", "gamma_2"}),
    ({"description__contains": "%"}, {"gamma_1"}),
    ({"name__in": ["alpha", "Beta", "nobody"]}, {"alpha", "Beta"}),
    ({"name__in": []}, set()),
    ({"num_nodes__gt": 2}, {"gamma_1", "gamma_2"}),
    ({"num_nodes__gte": 2}, {"Beta", "gamma_1", "gamma_2"}),
    ({"num_nodes__lt": 2}, {"alpha"}),
    ({"num_nodes__lte": 2}, {"alpha", "Beta"}),
    ({"return_code__isnull": True}, {"alpha", "Beta", "gamma_1", "gamma_2"}),
    ({"return_code__isnull": False}, set()),
    ({"workflow": "wf2", "num_nodes__lt": 4}, {"gamma_1"}),
    ({"state": "preprocessed"}, {"alpha", "Beta", "gamma_1", "gamma_2"}),
    ({"state__in": [JobState.FAILED, "READY"]}, set()),
]


def test_every_lookup_selects_the_matching_jobs(jobs: dict[str, BalsamJob]) -> None:
    for kwargs, expected in LOOKUP_CASES:
        assert names(BalsamJob.objects.filter(**kwargs)) == expected, kwargs


def test_exclude_and_chained_filters(jobs: dict[str, BalsamJob]) -> None:
    assert names(BalsamJob.objects.exclude(workflow="wf1")) == {"gamma_1", "gamma_2"}
    # exclude(a, b) drops jobs matching both, as in Django.
    both = BalsamJob.objects.exclude(workflow="wf2", num_nodes=3)
    assert names(both) == {"alpha", "Beta", "gamma_2"}
    chained = BalsamJob.objects.filter(name__icontains="a").exclude(num_nodes__gte=4)
    assert names(chained.filter(workflow="wf2")) == {"gamma_1"}
    assert names(BalsamJob.objects.all()) == set(jobs)


def test_ids_and_uuids_select_one_job(jobs: dict[str, BalsamJob]) -> None:
    beta = jobs["Beta"]
    assert beta.job_id is not None
    assert BalsamJob.objects.get(pk=beta.job_id).name == "Beta"
    assert names(BalsamJob.objects.filter(job_id=beta.job_id)) == {"Beta"}
    assert names(BalsamJob.objects.filter(pk=uuid.UUID(beta.job_id))) == {"Beta"}
    assert names(BalsamJob.objects.filter(pk__in=[beta, jobs["alpha"].job_id])) == {
        "alpha",
        "Beta",
    }
    wf2 = BalsamJob.objects.filter(workflow="wf2")
    assert names(BalsamJob.objects.filter(job_id__in=wf2)) == {"gamma_1", "gamma_2"}


def test_bad_filters_name_the_problem(jobs: dict[str, BalsamJob]) -> None:
    with pytest.raises(ValidationError, match=r"'nodes'.*fields are:.*num_nodes"):
        BalsamJob.objects.filter(nodes=2)
    with pytest.raises(ValidationError, match="'name__like'"):
        BalsamJob.objects.filter(name__like="a")
    with pytest.raises(ValidationError, match="unknown job state 'DONE'"):
        BalsamJob.objects.filter(state="DONE")
    with pytest.raises(ValidationError, match="name__in needs a list"):
        BalsamJob.objects.filter(name__in="alpha")
    with pytest.raises(ValidationError, match="'-size'"):
        BalsamJob.objects.order_by("-size")
    with pytest.raises(ValidationError, match="not saved"):
        BalsamJob.objects.filter(pk=BalsamJob(name="x", application="SayHello"))
    with pytest.raises(ValidationError, match=r"num_nodes: 10{30} is out of range for a query"):
        BalsamJob.objects.filter(num_nodes__gt=10**30).count()
    with pytest.raises(ValidationError, match=r"num_nodes: -10{30} is out of range"):
        BalsamJob.objects.filter(num_nodes__in=[1, -(10**30)])
    assert BalsamJob.objects.filter(num_nodes__lt=2**31 - 1).count() == 4


def test_order_first_count_and_get(jobs: dict[str, BalsamJob]) -> None:
    # Mixed case sorts by the server's collation; compare lowercase names only.
    by_name_desc = BalsamJob.objects.exclude(name="Beta").order_by("-name")
    assert [j.name for j in by_name_desc] == ["gamma_2", "gamma_1", "alpha"]
    assert [j.name for j in BalsamJob.objects.order_by("workflow", "-num_nodes")] == [
        "Beta",
        "alpha",
        "gamma_2",
        "gamma_1",
    ]
    first = BalsamJob.objects.filter(workflow="wf2").order_by("num_nodes").first()
    assert first is not None and first.name == "gamma_1"
    assert BalsamJob.objects.filter(name="nobody").first() is None
    assert BalsamJob.objects.count() == 4
    assert BalsamJob.objects.filter(workflow="wf1").count() == 2
    assert BalsamJob.objects.filter(workflow="wf1").exists()
    assert not BalsamJob.objects.filter(workflow="wf9").exists()
    assert BalsamJob.objects.get(name="alpha", workflow="wf1").num_nodes == 1


def test_get_errors_are_balsam_errors(jobs: dict[str, BalsamJob]) -> None:
    with pytest.raises(BalsamJob.DoesNotExist, match="no job matches name='nobody'"):
        BalsamJob.objects.get(name="nobody")
    with pytest.raises(NotFound):
        BalsamJob.objects.get(name="nobody")
    with pytest.raises(BalsamJob.MultipleObjectsReturned, match="more than one job"):
        BalsamJob.objects.get(workflow="wf1")
    with pytest.raises(Ambiguous):
        BalsamJob.objects.get(workflow="wf1")


def test_len_indexing_and_slicing(jobs: dict[str, BalsamJob]) -> None:
    ordered = BalsamJob.objects.order_by("num_nodes")
    assert len(ordered) == 4 and bool(ordered)
    assert ordered[0].name == "alpha" and ordered[3].name == "gamma_2"
    fresh = BalsamJob.objects.order_by("num_nodes")
    assert fresh[2].name == "gamma_1"  # one LIMIT/OFFSET query, nothing cached
    assert [j.name for j in fresh[1:3]] == ["Beta", "gamma_1"]
    assert [j.name for j in fresh[1:][1:]] == ["gamma_1", "gamma_2"]
    assert [j.name for j in fresh[:3][1:5]] == ["Beta", "gamma_1"]
    assert fresh[1:3].count() == 2 and fresh[3:10].count() == 1 and fresh[9:].count() == 0
    assert not BalsamJob.objects.filter(name="nobody")
    with pytest.raises(IndexError):
        fresh[4]
    with pytest.raises(ValidationError, match="negative"):
        fresh[-1]
    with pytest.raises(ValidationError, match="step"):
        fresh[::2]
    with pytest.raises(ValidationError, match="slice has been taken"):
        fresh[:2].filter(name="alpha")
    assert "JobQuerySet" in repr(fresh[:1]) and "alpha" in repr(fresh[:1])


def test_query_sets_are_lazy(api: LocalBackend) -> None:
    pending = BalsamJob.objects.filter(workflow="later")
    page = BalsamJob.objects.order_by("name")[1:]
    BalsamJob.objects.bulk_create(
        [BalsamJob(name=f"n{i}", workflow="later", application="SayHello") for i in range(3)]
    )
    assert names(pending) == {"n0", "n1", "n2"}
    assert [j.name for j in page] == ["n1", "n2"]
    # Evaluated sets keep their results, as Django's do; all() asks again.
    BalsamJob.objects.create(name="n3", workflow="later", application="SayHello")
    assert len(pending) == 3 and len(pending.all()) == 4


def test_values_list(jobs: dict[str, BalsamJob]) -> None:
    wf1 = BalsamJob.objects.filter(workflow="wf1").order_by("-num_nodes")
    assert wf1.values_list("name", flat=True) == ["Beta", "alpha"]
    pairs = BalsamJob.objects.order_by("num_nodes").values_list("name", "num_nodes")
    assert pairs == [("alpha", 1), ("Beta", 2), ("gamma_1", 3), ("gamma_2", 4)]
    assert set(BalsamJob.objects.values_list("pk", flat=True)) == {j.job_id for j in jobs.values()}
    with pytest.raises(ValidationError, match="exactly one field"):
        wf1.values_list("name", "workflow", flat=True)
    with pytest.raises(ValidationError, match="'colour'"):
        wf1.values_list("colour")


def test_update_fields(jobs: dict[str, BalsamJob]) -> None:
    changed = BalsamJob.objects.filter(workflow="wf2").update(num_nodes=8, args="--fast")
    assert changed == 2
    assert BalsamJob.objects.filter(num_nodes=8, args="--fast").count() == 2
    assert BalsamJob.objects.get(name="alpha").num_nodes == 1
    # Balsam 0.x spelling of environment variables.
    BalsamJob.objects.filter(name="alpha").update(environ_vars="A=1:B=2")
    assert BalsamJob.objects.get(name="alpha").environ_vars == {"A": "1", "B": "2"}


def test_update_refuses_bad_input_and_changes_nothing(jobs: dict[str, BalsamJob]) -> None:
    with pytest.raises(ValidationError, match="'colour'"):
        BalsamJob.objects.update(colour="red", num_nodes=2)
    with pytest.raises(ValidationError, match="num_nodes"):
        BalsamJob.objects.update(num_nodes=-1)
    with pytest.raises(NotFound, match="unknown application"):
        BalsamJob.objects.update(application="NoSuchApp")
    with pytest.raises(ValidationError, match="unknown job state"):
        BalsamJob.objects.update(state="SLEEPING", num_nodes=2)
    with pytest.raises(InvalidTransition, match="only to one of"):
        BalsamJob.objects.update(state="RUNNING", num_nodes=2)
    after = BalsamJob.objects.order_by("num_nodes").values_list("num_nodes", "application")
    assert after == [(1, "SayHello"), (2, "SayHello"), (3, "SayHello"), (4, "SayHello")]


def test_kill_stops_what_is_still_active_and_passes_over_what_ended(
    jobs: dict[str, BalsamJob],
) -> None:
    done = jobs["alpha"]
    done.state = JobState.JOB_FINISHED
    done.save()
    child = BalsamJob(name="below-beta", workflow="wf3", application="SayHello")
    child.save()
    child.set_parents([jobs["Beta"]])
    killed = BalsamJob.objects.filter(workflow="wf1").kill(recursive=True)
    assert sorted(killed) == sorted([jobs["Beta"].job_id, child.job_id])
    states = dict(BalsamJob.objects.values_list("name", "state"))
    assert states["alpha"] == JobState.JOB_FINISHED, "an ended job is left as it is"
    assert states["Beta"] == states["below-beta"] == JobState.USER_KILLED
    assert states["gamma_1"] == states["gamma_2"] == JobState.PREPROCESSED
    # Again: nothing left to kill in wf1 is no error.
    assert BalsamJob.objects.filter(workflow="wf1").kill() == []
    # Without recursive only the matched jobs.
    below = BalsamJob(name="below-gamma", workflow="wf3", application="SayHello")
    below.save()
    below.set_parents([jobs["gamma_1"]])
    assert BalsamJob.objects.filter(name="gamma_1").kill() == [jobs["gamma_1"].job_id]


def test_update_state_goes_through_the_state_machine(jobs: dict[str, BalsamJob]) -> None:
    assert BalsamJob.objects.filter(workflow="wf1").update(state="USER_KILLED") == 2
    killed = BalsamJob.objects.filter(state=JobState.USER_KILLED)
    assert names(killed) == {"alpha", "Beta"}
    history = killed.first().history()  # type: ignore[union-attr]
    assert (history[-1].from_state, history[-1].to_state) == ("PREPROCESSED", "USER_KILLED")
    # Killed jobs may be reset; so may a waiting one, as in Balsam 0.5 (it fast-forwards
    # back to PREPROCESSED, the reset kept in its history).
    assert BalsamJob.objects.filter(workflow="wf1").update(state="READY") == 2
    assert BalsamJob.objects.filter(name="gamma_1").update(state="READY") == 1
    gamma = BalsamJob.objects.get(name="gamma_1")
    assert gamma.state == JobState.PREPROCESSED
    assert ("PREPROCESSED", "READY") in [(e.from_state, e.to_state) for e in gamma.history()]


def test_update_with_one_invalid_move_changes_nothing(jobs: dict[str, BalsamJob]) -> None:
    failed = BalsamJob.objects.filter(workflow="wf1")
    assert failed.update(state="FAILED") == 2
    # A running job can only be stopped for good, not sent back to wait: one refused move
    # refuses the whole update.
    running = jobs["gamma_1"].job_id or ""
    backend = get_backend()
    session = backend.open_session("t", "h", 1)
    assert len(backend.claim_jobs(session.id, ClaimRequest(job_ids=[running], max_nodes=8))) == 1
    started = StateUpdate(job_id=running, state=JobState.RUNNING)
    assert backend.record_updates(session.id, [started])[0].ok
    assert BalsamJob.objects.get(name="gamma_1").state == JobState.RUNNING
    before = BalsamJob.objects.order_by("name").values_list("name", "state", "wall_time_minutes")
    with pytest.raises(InvalidTransition) as info:
        BalsamJob.objects.update(state="RESTART_READY", wall_time_minutes=30)
    assert str(info.value).startswith("1 of 4 jobs cannot move to RESTART_READY, so none was")
    assert "a RUNNING job can only be moved to an end" in str(info.value)
    after = BalsamJob.objects.order_by("name").values_list("name", "state", "wall_time_minutes")
    assert after == before
    assert [e.to_state for e in jobs["gamma_1"].history()][-1] == "RUNNING"
    # The valid part alone goes through, fields and states together.
    assert failed.update(state="RESTART_READY", wall_time_minutes=30) == 2
    moved = BalsamJob.objects.filter(state="RESTART_READY", wall_time_minutes=30)
    assert names(moved) == {"alpha", "Beta"}


def test_update_keeps_jobs_already_in_the_target_state(jobs: dict[str, BalsamJob]) -> None:
    assert BalsamJob.objects.filter(name="alpha").update(state="USER_KILLED") == 1
    assert BalsamJob.objects.filter(workflow="wf1").update(state="USER_KILLED") == 2
    assert names(BalsamJob.objects.filter(state="USER_KILLED")) == {"alpha", "Beta"}
    kills = [e for e in jobs["alpha"].history() if e.to_state == "USER_KILLED"]
    assert len(kills) == 1


def test_update_and_delete_on_a_slice_touch_only_that_slice(jobs: dict[str, BalsamJob]) -> None:
    assert BalsamJob.objects.order_by("num_nodes")[:2].update(description="small") == 2
    assert names(BalsamJob.objects.filter(description="small")) == {"alpha", "Beta"}
    assert BalsamJob.objects.order_by("-num_nodes")[:1].delete() == 1
    assert names(BalsamJob.objects.all()) == {"alpha", "Beta", "gamma_1"}


def test_delete(jobs: dict[str, BalsamJob]) -> None:
    assert BalsamJob.objects.filter(workflow="wf2").delete() == 2
    assert names(BalsamJob.objects.all()) == {"alpha", "Beta"}
    assert BalsamJob.objects.filter(workflow="wf2").delete() == 0
    assert BalsamJob.objects.all().delete() == 2
    assert BalsamJob.objects.count() == 0


class CountingBackend:
    """Passes every call to a real backend and counts them by method name."""

    def __init__(self, inner: LocalBackend) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted


def test_bulk_create_of_1000_jobs_is_one_backend_call(api: LocalBackend) -> None:
    counting = CountingBackend(api)
    batch = [
        BalsamJob(name=f"task{i}", workflow="sweep", application="SayHello", args=f"world {i}")
        for i in range(1000)
    ]
    with use_backend(counting):
        made = BalsamJob.objects.bulk_create(batch)
    assert counting.calls == Counter({"bulk_create_jobs": 1})
    assert made is not batch and made == batch
    assert all(j.job_id and j.state == JobState.PREPROCESSED for j in made)
    assert len({j.job_id for j in made}) == 1000
    assert BalsamJob.objects.filter(workflow="sweep").count() == 1000
    assert BalsamJob.objects.get(name="task999").args == "world 999"


def test_bulk_create_is_all_or_nothing(api: LocalBackend) -> None:
    good = BalsamJob(name="good", application="SayHello")
    bad_app = BalsamJob(name="bad", application="Nope")
    with pytest.raises(NotFound, match=r"unknown application.*Nope"):
        BalsamJob.objects.bulk_create([good, bad_app])
    with pytest.raises(ValidationError, match="job 'worse': num_nodes"):
        BalsamJob.objects.bulk_create(
            [good, BalsamJob(name="worse", application="SayHello", num_nodes=0)]
        )
    assert BalsamJob.objects.count() == 0 and good.job_id is None
    BalsamJob.objects.bulk_create([good])
    with pytest.raises(ValidationError, match="saved already"):
        BalsamJob.objects.bulk_create([good])
    batches = [BalsamJob(name=f"b{i}", application="SayHello") for i in range(5)]
    counting = CountingBackend(api)
    with use_backend(counting):
        BalsamJob.objects.bulk_create(batches, batch_size=2)
    assert counting.calls["bulk_create_jobs"] == 3
    assert BalsamJob.objects.count() == 6
